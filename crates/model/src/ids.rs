use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
            utoipa::ToSchema,
        )]
        #[serde(transparent)]
        #[schema(value_type = String)]
        pub struct $name(pub String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }
    };
}

id_type!(
    /// A load balancer (OCI load balancer, Huawei loadbalancer, Azure APIM service).
    LoadBalancerId
);
id_type!(
    /// A listener: a port the data plane binds.
    ListenerId
);
id_type!(
    /// A pool (OCI backend set, Huawei pool, Azure backend).
    PoolId
);
id_type!(
    /// A member (OCI backend, Huawei member, Azure Single backend or pool service).
    MemberId
);
id_type!(
    /// A health monitor (OCI health checker, Huawei healthmonitor).
    HealthMonitorId
);
id_type!(
    /// A subnet: a CIDR inside a VPC that members' addresses must lie in (Huawei).
    SubnetId
);
id_type!(
    /// A VPC: a named network (with an optional CIDR) that subnets belong to (Huawei VPC).
    VpcId
);
id_type!(
    /// A certificate listeners terminate TLS with (OCI certificate, Huawei certificate).
    CertificateId
);
id_type!(
    /// An OCI API signing key registered at run time.
    OciApiKeyId
);
id_type!(
    /// A work request tracking one asynchronous change.
    WorkRequestId
);

/// The kinds of resource, for references, errors and work requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    LoadBalancer,
    Listener,
    Pool,
    Member,
    HealthMonitor,
    Subnet,
    Vpc,
    Certificate,
    OciApiKey,
    WorkRequest,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::LoadBalancer => "load balancer",
            ResourceKind::Listener => "listener",
            ResourceKind::Pool => "pool",
            ResourceKind::Member => "member",
            ResourceKind::HealthMonitor => "health monitor",
            ResourceKind::Subnet => "subnet",
            ResourceKind::Vpc => "VPC",
            ResourceKind::Certificate => "certificate",
            ResourceKind::OciApiKey => "OCI API key",
            ResourceKind::WorkRequest => "work request",
        }
    }
}

impl std::fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A typed reference to one resource.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResourceRef {
    pub kind: ResourceKind,
    pub id: String,
}
