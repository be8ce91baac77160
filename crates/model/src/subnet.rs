use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{Checker, MAX_NAME_LEN, SubnetId, Timestamp, ValidationError};

/// A CIDR inside a VPC. Huawei members name one, and their address must lie in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubnetSpec {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[schema(value_type = String, example = "10.0.0.0/24")]
    pub cidr: IpNet,
    /// A VPC's id, or any name grouping subnets (load balancers' members must share it).
    pub vpc_id: String,
    /// The subnet's gateway: never given to a load balancer as its address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "10.0.0.1")]
    pub gateway_ip: Option<IpAddr>,
}

impl SubnetSpec {
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut c = Checker::new();
        c.max_len("name", &self.name, MAX_NAME_LEN);
        c.check(!self.vpc_id.is_empty(), "vpc_id", || {
            "vpc_id must not be empty".into()
        });
        c.max_len("description", &self.description, MAX_NAME_LEN);
        c.max_len("vpc_id", &self.vpc_id, 36);
        c.check(self.cidr.trunc() == self.cidr, "cidr", || {
            format!(
                "cidr {} has host bits set; did you mean {}?",
                self.cidr,
                self.cidr.trunc()
            )
        });
        if let Some(gw) = self.gateway_ip {
            c.check(self.cidr.contains(&gw), "gateway_ip", || {
                format!("gateway_ip {gw} is not in cidr {}", self.cidr)
            });
            c.check(
                !crate::vip::is_network_or_broadcast(&self.cidr, gw),
                "gateway_ip",
                || {
                    format!(
                        "gateway_ip {gw} is the network or broadcast address of {}",
                        self.cidr
                    )
                },
            );
        }
        c.finish()
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        self.cidr.contains(&addr)
    }

    pub fn is_ipv6(&self) -> bool {
        matches!(self.cidr, IpNet::V6(_))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Subnet {
    pub id: SubnetId,
    #[serde(flatten)]
    pub spec: SubnetSpec,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}
