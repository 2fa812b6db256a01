//! teal's simple JSON format (`/v1/models/{m}/predict`): rows of features in, one
//! prediction per row out, for models with a single `[rows, features]` input.

use serde::Deserialize;

use super::elements::{Scalar, typed};
use super::signature::shape_text;
use super::{InferRequest, ProtocolError, Signature, Tensor, TensorData};

impl TensorData {
    /// The element at `index` as a JSON value, for the simple predict format; a float JSON
    /// cannot carry (NaN, infinity) becomes `null` rather than invalid JSON.
    pub fn json_value(&self, index: usize) -> serde_json::Value {
        match self {
            TensorData::Bool(v) => v[index].into(),
            TensorData::Int32(v) => v[index].into(),
            TensorData::Int64(v) => v[index].into(),
            TensorData::Fp32(v) => serde_json::Number::from_f64(f64::from(v[index]))
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            TensorData::Fp64(v) => serde_json::Number::from_f64(v[index])
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
        }
    }
}

impl InferRequest {
    /// Builds a request from the simple JSON format, `{"features": [[...], ...]}` or one
    /// row `{"features": [...]}`, for a model with one two-dimensional input.
    pub fn from_features(
        body: &[u8],
        signature: &Signature,
    ) -> Result<InferRequest, ProtocolError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Predict {
            features: serde_json::Value,
        }
        let [spec] = signature.inputs.as_slice() else {
            return Err(ProtocolError::Unsupported(format!(
                "this model takes {} inputs ({}); the simple predict endpoint serves one-input models: use the V2 infer endpoint",
                signature.inputs.len(),
                signature.describe_inputs()
            )));
        };
        if spec.shape.len() != 2 {
            return Err(ProtocolError::Unsupported(format!(
                "this model's input is {}; the simple predict endpoint serves models with a [rows, features] input: use the V2 infer endpoint",
                spec.describe()
            )));
        }
        let predict: Predict =
            serde_json::from_slice(body).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
        let rows: Vec<&serde_json::Value> = match &predict.features {
            serde_json::Value::Array(items)
                if items.iter().all(serde_json::Value::is_array) && !items.is_empty() =>
            {
                items.iter().collect()
            }
            serde_json::Value::Array(items) if items.iter().all(|v| !v.is_array()) => {
                vec![&predict.features]
            }
            _ => {
                return Err(ProtocolError::Malformed(
                    "\"features\" must be one row of numbers or a list of rows, like [[0.1, 2.0], [3.5, 4.0]]".to_string(),
                ));
            }
        };
        let width = rows[0].as_array().map_or(0, Vec::len);
        let mut values = Vec::with_capacity(rows.len() * width);
        for (index, row) in rows.iter().enumerate() {
            let items = row.as_array().map(Vec::as_slice).unwrap_or_default();
            if items.len() != width {
                return Err(ProtocolError::Malformed(format!(
                    "row {index} has {} features but row 0 has {width}: every row needs the same number",
                    items.len()
                )));
            }
            for item in items {
                values.push(match item {
                    serde_json::Value::Bool(b) => Scalar::Bool(*b),
                    serde_json::Value::Number(n) => n
                        .as_i64()
                        .map(Scalar::Int)
                        .or_else(|| n.as_u64().map(Scalar::UInt))
                        .or_else(|| n.as_f64().map(Scalar::Float))
                        .unwrap_or(Scalar::Float(f64::NAN)),
                    other => {
                        return Err(ProtocolError::Malformed(format!(
                            "row {index} has {other}, which is not a number: features are numbers"
                        )));
                    }
                });
            }
        }
        let shape = vec![rows.len(), width];
        if !spec.accepts_shape(&shape) {
            return Err(ProtocolError::Shape {
                name: spec.name.clone(),
                got: shape_text(&shape),
                want: shape_text(&spec.shape),
            });
        }
        let data = typed(&spec.name, spec.datatype, values)?;
        Ok(InferRequest {
            id: None,
            inputs: vec![Tensor {
                name: spec.name.clone(),
                shape,
                data,
            }],
            outputs: None,
            binary_output: false,
        })
    }
}

/// The simple format's predictions: one entry per row of `output`, a scalar for a
/// one-dimensional output (or one column, `[rows, 1]`) and a list otherwise.
pub fn predictions(output: &Tensor) -> Vec<serde_json::Value> {
    let rows = output.shape.first().copied().unwrap_or(0);
    if rows == 0 {
        return Vec::new();
    }
    let per_row = output.data.len() / rows;
    (0..rows)
        .map(|r| {
            if output.shape.len() == 1 || per_row == 1 {
                output.data.json_value(r)
            } else {
                serde_json::Value::Array(
                    (0..per_row)
                        .map(|i| output.data.json_value(r * per_row + i))
                        .collect(),
                )
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::protocol::fixtures::digits;

    use super::*;

    #[test]
    fn simple_features_accept_one_row_or_many() {
        let one = InferRequest::from_features(br#"{"features":[1,2,3,4]}"#, &digits()).unwrap();
        assert_eq!(one.inputs[0].shape, vec![1, 4]);
        let two = InferRequest::from_features(br#"{"features":[[1,2,3,4],[5,6,7,8]]}"#, &digits())
            .unwrap();
        assert_eq!(two.inputs[0].shape, vec![2, 4]);
        for (body, expected) in [
            (
                r#"{"features":[[1,2,3,4],[5,6,7]]}"#,
                "row 1 has 3 features",
            ),
            (r#"{"features":[1,2,3]}"#, "has shape [1, 3]"),
            (r#"{"features":"abc"}"#, "must be one row"),
            (r#"{"features":[]}"#, "has shape [1, 0]"),
            (r#"{"rows":[]}"#, "unknown field `rows`"),
        ] {
            let err = InferRequest::from_features(body.as_bytes(), &digits())
                .expect_err(body)
                .to_string();
            assert!(err.contains(expected), "{body}: got {err:?}");
        }
    }

    #[test]
    fn predictions_follow_the_output_rank() {
        let labels = Tensor {
            name: "label".into(),
            shape: vec![2],
            data: TensorData::Int64(vec![7, 1]),
        };
        assert_eq!(
            predictions(&labels),
            vec![serde_json::json!(7), serde_json::json!(1)]
        );
        let scores = Tensor {
            name: "p".into(),
            shape: vec![2, 2],
            data: TensorData::Fp32(vec![0.5, 0.5, 1.0, 0.0]),
        };
        assert_eq!(predictions(&scores)[1], serde_json::json!([1.0, 0.0]));
        let column = Tensor {
            name: "predict".into(),
            shape: vec![2, 1],
            data: TensorData::Int64(vec![4, 5]),
        };
        assert_eq!(
            predictions(&column),
            vec![serde_json::json!(4), serde_json::json!(5)]
        );
    }
}
