//! teal's simple JSON format (`/v1/models/{m}/predict`): rows of features in, one
//! prediction per row out, for models with a single `[rows, features]` input.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::elements::{Scalar, typed};
use super::signature::shape_text;
use super::{InferRequest, ProtocolError, Signature, Tensor, TensorData};

impl TensorData {
    /// The element at `index` as a JSON value, for the simple predict format; a float JSON
    /// cannot carry (NaN, infinity) becomes `null` rather than invalid JSON.
    pub fn json_value(&self, index: usize) -> serde_json::Value {
        match self {
            TensorData::Bool(v) => v[index].into(),
            TensorData::Uint64(v) => v[index].into(),
            TensorData::Int64(v) => v[index].into(),
            TensorData::Bytes(v) => String::from_utf8_lossy(&v[index]).into_owned().into(),
            other if other.is_integer() => {
                // Every other integer type fits an i64.
                (other.number(index).unwrap_or_default() as i64).into()
            }
            other => other
                .number(index)
                .and_then(serde_json::Number::from_f64)
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
            features: Features,
        }
        InferRequest::from_rows(signature, "simple predict endpoint", || {
            let predict: Predict = serde_json::from_slice(body)
                .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
            Ok(predict.features)
        })
    }

    /// Builds a request from KServe's V1 protocol, `{"instances": [[...], ...]}`: one
    /// instance a row, for a model with one two-dimensional input.
    pub fn from_instances(
        body: &[u8],
        signature: &Signature,
    ) -> Result<InferRequest, ProtocolError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Predict {
            instances: Features,
        }
        InferRequest::from_rows(signature, "V1 predict endpoint", || {
            let predict: Predict = serde_json::from_slice(body).map_err(|e| {
                ProtocolError::Malformed(e.to_string().replace("`features`", "`instances`"))
            })?;
            Ok(match predict.instances {
                // KServe V1: a list of numbers is that many instances of one value each.
                Features::Rows {
                    values, flat: true, ..
                } => Features::Rows {
                    rows: values.len(),
                    width: 1,
                    values,
                    flat: true,
                },
                Features::Refused(why) => {
                    Features::Refused(why.replace("\"features\"", "\"instances\""))
                }
                rows => rows,
            })
        })
    }

    fn from_rows(
        signature: &Signature,
        endpoint: &str,
        read: impl FnOnce() -> Result<Features, ProtocolError>,
    ) -> Result<InferRequest, ProtocolError> {
        let [spec] = signature.inputs.as_slice() else {
            return Err(ProtocolError::Unsupported(format!(
                "this model takes {} inputs ({}); the {endpoint} serves one-input models: use the V2 infer endpoint",
                signature.inputs.len(),
                signature.describe_inputs()
            )));
        };
        if spec.shape.len() != 2 {
            return Err(ProtocolError::Unsupported(format!(
                "this model's input is {}; the {endpoint} serves models with a [rows, features] input: use the V2 infer endpoint",
                spec.describe()
            )));
        }
        let (values, rows, width) = match read()? {
            Features::Rows {
                values,
                rows,
                width,
                ..
            } => (values, rows, width),
            Features::Refused(why) => return Err(ProtocolError::Malformed(why)),
        };
        let shape = vec![rows, width];
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

const MUST_BE_ROWS: &str =
    "\"features\" must be one row of numbers or a list of rows, like [[0.1, 2.0], [3.5, 4.0]]";

/// `"features"` read as it streams by, straight into one flat list of values: each row's
/// length is checked against row 0's as the row is read, so a body of one wide row and many
/// short ones is refused at the first short one, holding nothing but row 0. A body the format
/// refuses is read to its end (holding nothing) and becomes `Refused`, with the reason said
/// the way the caller wrote it, without serde's position.
enum Features {
    Rows {
        values: Vec<Scalar>,
        rows: usize,
        width: usize,
        /// Given as one list of numbers, not a list of rows.
        flat: bool,
    },
    Refused(String),
}

impl<'de> Deserialize<'de> for Features {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FeaturesVisitor)
    }
}

struct FeaturesVisitor;

impl FeaturesVisitor {
    fn refused<E>(self) -> Result<Features, E> {
        Ok(Features::Refused(MUST_BE_ROWS.to_string()))
    }
}

impl<'de> Visitor<'de> for FeaturesVisitor {
    type Value = Features;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("one row of numbers or a list of rows")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Features, E> {
        self.refused()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Features, E> {
        self.refused()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Features, E> {
        self.refused()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Features, E> {
        self.refused()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Features, E> {
        self.refused()
    }
    fn visit_unit<E: de::Error>(self) -> Result<Features, E> {
        self.refused()
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Features, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        self.refused()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Features, A::Error> {
        let mut values = Vec::new();
        // Row 0 decides: a list of rows, or the items of one row.
        let mut width: Option<usize> = None;
        let mut rows = 0;
        let mut one_row = false;
        let mut not_a_number: Option<String> = None;
        let mut problem: Option<String> = None;
        while let Some(item) = seq.next_element_seed(Item {
            values: &mut values,
            width,
        })? {
            match item {
                Element::Row { len, not_a_number } if !one_row => {
                    let width = *width.get_or_insert(len);
                    if len != width {
                        problem = Some(format!(
                            "row {rows} has {len} features but row 0 has {width}: every row needs the same number"
                        ));
                    } else if let Some(other) = not_a_number {
                        problem = Some(format!(
                            "row {rows} has {other}, which is not a number: features are numbers"
                        ));
                    }
                    rows += 1;
                }
                Element::Number if width.is_none() => one_row = true,
                Element::NotANumber(other) if width.is_none() => {
                    one_row = true;
                    not_a_number.get_or_insert(other);
                }
                // A row among numbers, or a number among rows.
                _ => problem = Some(MUST_BE_ROWS.to_string()),
            }
            if problem.is_some() {
                break;
            }
        }
        if let Some(why) = problem {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(Features::Refused(why));
        }
        if let Some(other) = not_a_number {
            return Ok(Features::Refused(format!(
                "row 0 has {other}, which is not a number: features are numbers"
            )));
        }
        Ok(match width {
            Some(width) => Features::Rows {
                values,
                rows,
                width,
                flat: false,
            },
            // One row (perhaps empty).
            None => Features::Rows {
                width: values.len(),
                values,
                rows: 1,
                flat: true,
            },
        })
    }
}

/// One item of `"features"`: a number (pushed), something else, or a row.
enum Element {
    Number,
    NotANumber(String),
    Row {
        len: usize,
        /// The first item of the row that is not a number, as JSON.
        not_a_number: Option<String>,
    },
}

/// Reads one item, pushing numbers onto `values`; a row's items are pushed only while the
/// row is no longer than `width` (row 0's length; any length for row 0 itself).
struct Item<'a> {
    values: &'a mut Vec<Scalar>,
    width: Option<usize>,
}

impl<'de> de::DeserializeSeed<'de> for Item<'_> {
    type Value = Element;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Element, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'a> Item<'a> {
    fn cell(self) -> Cell<'a> {
        Cell {
            values: self.values,
        }
    }
}

impl From<Result<(), String>> for Element {
    fn from(cell: Result<(), String>) -> Element {
        match cell {
            Ok(()) => Element::Number,
            Err(text) => Element::NotANumber(text),
        }
    }
}

impl<'de> Visitor<'de> for Item<'_> {
    type Value = Element;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number or a row of numbers")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Element, E> {
        self.cell().visit_bool(v).map(Element::from)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Element, E> {
        self.cell().visit_i64(v).map(Element::from)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Element, E> {
        self.cell().visit_u64(v).map(Element::from)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Element, E> {
        self.cell().visit_f64(v).map(Element::from)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Element, E> {
        self.cell().visit_str(v).map(Element::from)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Element, E> {
        self.cell().visit_unit().map(Element::from)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Element, A::Error> {
        self.cell().visit_map(map).map(Element::from)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Element, A::Error> {
        let limit = self.width.unwrap_or(usize::MAX);
        let mut len = 0;
        let mut not_a_number = None;
        loop {
            if len >= limit {
                // Past row 0's width: counted for the message, not kept.
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    break;
                }
                len += 1;
                continue;
            }
            let cell = Cell {
                values: &mut *self.values,
            };
            match seq.next_element_seed(cell)? {
                None => break,
                Some(Ok(())) => {}
                Some(Err(other)) => {
                    not_a_number.get_or_insert(other);
                }
            }
            len += 1;
        }
        Ok(Element::Row { len, not_a_number })
    }
}

/// One item of a row: a number, pushed; anything else comes back as its JSON text.
struct Cell<'a> {
    values: &'a mut Vec<Scalar>,
}

impl<'de> de::DeserializeSeed<'de> for Cell<'_> {
    type Value = Result<(), String>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Cell<'_> {
    fn number<E>(self, value: Scalar) -> Result<Result<(), String>, E> {
        self.values.push(value);
        Ok(Ok(()))
    }
}

impl<'de> Visitor<'de> for Cell<'_> {
    type Value = Result<(), String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        self.number(Scalar::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.number(Scalar::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.number(i64::try_from(v).map_or(Scalar::UInt(v), Scalar::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        self.number(Scalar::Float(v))
    }
    /// A string is a feature of a text model (a BYTES input); a numeric model refuses it
    /// when the row is given its datatype, naming the element.
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.values.push(Scalar::Str(v.to_string()));
        Ok(Ok(()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Err("null".to_string()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let value = serde_json::Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        Ok(Err(value.to_string()))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let value = serde_json::Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(Err(value.to_string()))
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
    fn kserve_v1_instances_are_rows_and_a_list_of_numbers_is_that_many_instances() {
        let rows =
            InferRequest::from_instances(br#"{"instances":[[1,2,3,4],[5,6,7,8]]}"#, &digits())
                .unwrap();
        assert_eq!(rows.inputs[0].shape, vec![2, 4]);
        let mut one_wide = digits();
        one_wide.inputs[0].shape = vec![-1, 1];
        let three = InferRequest::from_instances(br#"{"instances":[1,2,3]}"#, &one_wide).unwrap();
        assert_eq!(three.inputs[0].shape, vec![3, 1]);
        // Four numbers are four instances of one value, not one row of four.
        let error = InferRequest::from_instances(br#"{"instances":[1,2,3,4]}"#, &digits())
            .unwrap_err()
            .to_string();
        assert!(error.contains("[4, 1]"), "{error}");
        let error = InferRequest::from_instances(br#"{"instances":"abc"}"#, &digits())
            .unwrap_err()
            .to_string();
        assert!(error.contains("\"instances\" must be"), "{error}");
    }

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
            (
                r#"{"features":[[1,2,3,4],[5,6,7,"x"]]}"#,
                r#"element 7 is "x", which is not a valid"#,
            ),
            (r#"{"features":[[1,[2],3,4]]}"#, "row 0 has [2], which"),
            (r#"{"features":[1,[2],3,4]}"#, "must be one row"),
            (r#"{"features":[[1,2,3,4],5]}"#, "must be one row"),
            (r#"{"features":[1,null,3,4]}"#, "row 0 has null, which"),
            (r#"{"features":{"a":1}}"#, "must be one row"),
            (
                r#"{"features":[[1,2,3,4],[1,2,3,4,5,6]]}"#,
                "row 1 has 6 features",
            ),
        ] {
            let err = InferRequest::from_features(body.as_bytes(), &digits())
                .expect_err(body)
                .to_string();
            assert!(err.contains(expected), "{body}: got {err:?}");
        }
    }

    #[test]
    fn one_wide_row_and_many_empty_ones_are_refused_by_their_lengths() {
        let wide = vec!["0"; 100_000].join(",");
        let empty = vec!["[]"; 1_000_000].join(",");
        let body = format!(r#"{{"features":[[{wide}],{empty}]}}"#);
        let err = InferRequest::from_features(body.as_bytes(), &digits())
            .expect_err("jagged rows")
            .to_string();
        assert!(
            err.contains("row 1 has 0 features but row 0 has 100000"),
            "{err}"
        );
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
