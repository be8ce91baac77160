use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{Checker, MAX_NAME_LEN, Timestamp, ValidationError, VpcId};

/// A VPC: what Huawei's VPC API creates and subnets name in `vpc_id`. A subnet's `vpc_id`
/// may also be a bare name with no VPC behind it (the native API lets it be); when it
/// names a VPC, the subnet lies within the VPC's CIDR and overlaps no other subnet of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VpcSpec {
    /// Required (it may be empty), so that no body at all makes a VPC.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The range its subnets must lie in (none: any).
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "192.168.0.0/16")]
    pub cidr: Option<IpNet>,
}

impl VpcSpec {
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut c = Checker::new();
        c.max_len("name", &self.name, MAX_NAME_LEN);
        c.max_len("description", &self.description, MAX_NAME_LEN);
        if let Some(cidr) = self.cidr {
            c.check(cidr.trunc() == cidr, "cidr", || {
                format!(
                    "cidr {cidr} has host bits set; did you mean {}?",
                    cidr.trunc()
                )
            });
        }
        c.finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Vpc {
    pub id: VpcId,
    #[serde(flatten)]
    pub spec: VpcSpec,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_must_be_a_network() {
        let mut v = VpcSpec {
            name: "v".into(),
            description: String::new(),
            cidr: Some("10.0.0.1/16".parse().unwrap()),
        };
        let e = v.validate().unwrap_err().to_string();
        assert!(e.contains("did you mean 10.0.0.0/16"), "{e}");
        v.cidr = Some("10.0.0.0/16".parse().unwrap());
        v.validate().unwrap();
        v.cidr = None;
        v.validate().unwrap();
    }
}
