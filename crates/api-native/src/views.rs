//! What the native API returns for each resource: the stored resource with its
//! provisioning and operating status, secrets masked.

use fulcrum_control::{Config, ControlPlane, Versioned};
use fulcrum_model::{
    Certificate, HealthMonitor, Listener, LoadBalancer, Member, OperatingStatus, Pool,
    ProvisioningStatus, ResourceKind, Subnet,
};
use serde::Serialize;

macro_rules! view {
    ($name:ident, $inner:ty) => {
        #[derive(Serialize, utoipa::ToSchema)]
        pub(crate) struct $name {
            #[serde(flatten)]
            pub resource: $inner,
            pub provisioning_status: ProvisioningStatus,
            pub operating_status: OperatingStatus,
        }
    };
}

view!(LoadBalancerView, LoadBalancer);
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ListenerView {
    #[serde(flatten)]
    pub resource: Listener,
    pub provisioning_status: ProvisioningStatus,
    pub operating_status: OperatingStatus,
    /// Why the listener is not serving, when its operating status is ERROR.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
}
view!(PoolView, Pool);
view!(MemberView, Member);
view!(HealthMonitorView, HealthMonitor);

/// A certificate as read: its private key masked.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct CertificateView {
    #[serde(flatten)]
    pub resource: Certificate,
}

pub(crate) fn certificate(v: &Versioned<Certificate>) -> CertificateView {
    let mut resource = v.value.clone();
    for key in fulcrum_model::Secrets::secrets_mut(&mut resource) {
        *key = "***".into();
    }
    CertificateView { resource }
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct SubnetView {
    #[serde(flatten)]
    pub resource: Subnet,
}

fn admin(up: bool) -> OperatingStatus {
    if up {
        OperatingStatus::Online
    } else {
        OperatingStatus::Offline
    }
}

pub(crate) fn lb(cp: &ControlPlane, cfg: &Config, v: &Versioned<LoadBalancer>) -> LoadBalancerView {
    LoadBalancerView {
        resource: v.value.clone(),
        provisioning_status: cp.load_balancer_status(cfg, v),
        operating_status: admin(v.value.spec.admin_state_up),
    }
}

pub(crate) fn listener(cp: &ControlPlane, v: &Versioned<Listener>) -> ListenerView {
    let mut resource = v.value.clone();
    if let Some(tls) = &mut resource.spec.tls {
        for key in fulcrum_model::Secrets::secrets_mut(tls) {
            *key = "***".into();
        }
    }
    let status_reason = cp.refusal(ResourceKind::Listener, v.value.id.as_str());
    ListenerView {
        resource,
        provisioning_status: cp.listener_status(v),
        operating_status: match status_reason {
            Some(_) => OperatingStatus::Error,
            None => admin(v.value.spec.admin_state_up),
        },
        status_reason,
    }
}

pub(crate) fn pool(cp: &ControlPlane, cfg: &Config, v: &Versioned<Pool>) -> PoolView {
    let mut resource = v.value.clone();
    resource.spec.upstream = resource.spec.upstream.masked();
    let statuses: Vec<OperatingStatus> = cfg
        .members_of(&v.value.id)
        .map(|m| cp.member_status(cfg, &m.value))
        .collect();
    let failing = statuses
        .iter()
        .filter(|s| **s == OperatingStatus::Error)
        .count();
    let operating_status = if failing > 0 && failing == statuses.len() {
        OperatingStatus::Error
    } else if failing > 0 {
        OperatingStatus::Degraded
    } else if cfg.monitor_of(&v.value.id).is_some() {
        OperatingStatus::Online
    } else {
        OperatingStatus::NoMonitor
    };
    PoolView {
        resource,
        provisioning_status: cp.pool_status(v),
        operating_status,
    }
}

pub(crate) fn member(cp: &ControlPlane, cfg: &Config, v: &Versioned<Member>) -> MemberView {
    let mut resource = v.value.clone();
    resource.spec.upstream = resource
        .spec
        .upstream
        .as_ref()
        .map(|u| Box::new(u.masked()));
    MemberView {
        operating_status: cp.member_status(cfg, &v.value),
        resource,
        provisioning_status: cp.provisioning_status(v),
    }
}

pub(crate) fn monitor(cp: &ControlPlane, v: &Versioned<HealthMonitor>) -> HealthMonitorView {
    HealthMonitorView {
        resource: v.value.clone(),
        provisioning_status: cp.provisioning_status(v),
        operating_status: admin(v.value.spec.admin_state_up),
    }
}

pub(crate) fn subnet(v: &Versioned<Subnet>) -> SubnetView {
    SubnetView {
        resource: v.value.clone(),
    }
}
