//! The schema gate.

use serde_json::json;

use super::result::result;
use super::{Gate, GateResult, Verdict};
use crate::protocol::Signature;

/// The candidate takes and gives what the live slot does: names, datatypes, compatible shapes.
pub fn schema(live: Option<&Signature>, candidate: Option<&Signature>) -> GateResult {
    let threshold = "same names and types".to_string();
    let (Some(live), Some(candidate)) = (live, candidate) else {
        return result(
            Gate::Schema,
            Verdict::Inconclusive,
            None,
            threshold,
            0,
            "a slot's server publishes no metadata to compare".into(),
            json!({}),
        );
    };
    let mut problems = Vec::new();
    for (what, a, b) in [
        ("input", &live.inputs, &candidate.inputs),
        ("output", &live.outputs, &candidate.outputs),
    ] {
        for spec in a {
            match b.iter().find(|s| s.name == spec.name) {
                None => problems.push(format!(
                    "{what} '{}' is missing from the candidate",
                    spec.name
                )),
                Some(other) if other.datatype != spec.datatype => problems.push(format!(
                    "{what} '{}' is {} on the candidate, {} live",
                    spec.name, other.datatype, spec.datatype
                )),
                Some(other) => {
                    let compatible = other.shape.len() == spec.shape.len()
                        && other
                            .shape
                            .iter()
                            .zip(&spec.shape)
                            .all(|(x, y)| *x < 0 || *y < 0 || x == y);
                    if !compatible {
                        problems.push(format!(
                            "{what} '{}' has shape {:?} on the candidate, {:?} live",
                            spec.name, other.shape, spec.shape
                        ));
                    }
                }
            }
        }
        for spec in b {
            if !a.iter().any(|s| s.name == spec.name) {
                problems.push(format!("the candidate has an extra {what} '{}'", spec.name));
            }
        }
    }
    if problems.is_empty() {
        result(
            Gate::Schema,
            Verdict::Pass,
            None,
            threshold,
            1,
            "inputs and outputs match".into(),
            json!({}),
        )
    } else {
        result(
            Gate::Schema,
            Verdict::Fail,
            None,
            threshold,
            1,
            problems.join("; "),
            json!({ "differences": problems }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Datatype, TensorSpec};

    #[test]
    fn schema_names_each_difference() {
        let spec = |name: &str, datatype, shape: Vec<i64>| TensorSpec {
            name: name.into(),
            datatype,
            shape,
        };
        let live = Signature {
            inputs: vec![spec("input", Datatype::Fp32, vec![-1, 64])],
            outputs: vec![spec("label", Datatype::Int64, vec![-1])],
        };
        let same = Signature {
            inputs: vec![spec("input", Datatype::Fp32, vec![8, 64])],
            outputs: live.outputs.clone(),
        };
        assert_eq!(schema(Some(&live), Some(&same)).verdict, Verdict::Pass);
        let renamed = Signature {
            inputs: vec![spec("pixels", Datatype::Fp32, vec![-1, 64])],
            outputs: live.outputs.clone(),
        };
        let gate = schema(Some(&live), Some(&renamed));
        assert_eq!(gate.verdict, Verdict::Fail);
        assert!(
            gate.reason.contains("input 'input' is missing"),
            "{}",
            gate.reason
        );
        assert_eq!(schema(Some(&live), None).verdict, Verdict::Inconclusive);
    }
}
