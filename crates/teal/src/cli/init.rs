//! `teal init`: from an ONNX file, and optionally a sample of rows, to the reference outputs
//! a version must reproduce and a commented config that `teal serve` runs.

use super::*;
use crate::backends::onnx::{self, OnnxModel, OnnxRuntime, Port};
use crate::control::validation::{Row, read_holdout};
use teal_core::protocol::{Datatype, Signature, Tensor};

const EXAMPLES: &str = "Examples:
  teal init model.onnx --name fraud --sample holdout.csv
      inspect model.onnx, write model.reference.json beside it and teal.toml here
  teal serve --config teal.toml
  teal init retrained.onnx --name fraud --version v2 --sample holdout.csv --reference-only
      the reference of a new version, and the `teal deploy` command that rolls it out

The sample is the holdout format `teal validate --holdout` reads: JSON lines like
{\"features\": [5.1, 3.5, 1.4, 0.2], \"label\": 0} (the label optional), or CSV with the label in
the last column (a first line that is not numbers is a header). With labels it becomes the
rollout's evidence: a new version must be right about as often as the live one.";

/// What `teal init` writes by default for a sample: the rows kept in the reference.
const DEFAULT_ROWS: usize = 200;

#[derive(Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct InitArgs {
    /// The ONNX file to serve (scikit-learn through skl2onnx, PyTorch through torch.onnx.export,
    /// or any other exporter).
    #[arg(value_name = "MODEL.onnx")]
    pub model_file: PathBuf,
    /// The model's name in URLs (/v2/models/NAME/infer). Default: the file's name, or its
    /// folder's when the file is called model.onnx.
    #[arg(long)]
    pub name: Option<String>,
    /// The version's name (default v1; with --reference-only, give the new version's).
    #[arg(long)]
    pub version: Option<String>,
    /// Rows of real inputs (see below): the reference is made from them, and with labels they
    /// are the rollout's evidence. Without it the reference uses made-up rows.
    #[arg(long, value_name = "FILE")]
    pub sample: Option<PathBuf>,
    /// Rows in the reference file, from the start of the sample.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_ROWS)]
    pub rows: usize,
    /// Where to write the reference outputs. Default: beside the model, NAME.reference.json
    /// for NAME.onnx.
    #[arg(long, value_name = "FILE")]
    pub reference: Option<PathBuf>,
    /// Where to write the config.
    #[arg(long, value_name = "FILE", default_value = "teal.toml")]
    pub config: PathBuf,
    /// Write only the reference, for a new version of a model that is already served, and
    /// print the `teal deploy` command that rolls it out.
    #[arg(long)]
    pub reference_only: bool,
    /// Replace the reference or config file if it exists.
    #[arg(long)]
    pub force: bool,
    /// The ONNX Runtime library (libonnxruntime.so); default: found as `teal serve` finds it.
    #[arg(long, value_name = "FILE")]
    pub onnxruntime: Option<PathBuf>,
    /// Print what was found and written as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// What the model is, judged from its outputs.
#[derive(Debug, PartialEq)]
enum Kind {
    /// An integer label of one value per row, and maybe scores per class.
    Classifier {
        label: String,
        classes: Option<usize>,
    },
    /// One floating-point value per row.
    Regressor {
        output: String,
    },
    Other,
}

fn kind_of(signature: &Signature) -> Kind {
    let per_row = |shape: &[i64]| shape.len() == 1 || (shape.len() == 2 && shape[1] == 1);
    let label = signature
        .outputs
        .iter()
        .find(|o| matches!(o.datatype, Datatype::Int64 | Datatype::Int32) && per_row(&o.shape));
    if let Some(label) = label {
        let classes = signature
            .outputs
            .iter()
            .find(|o| {
                matches!(o.datatype, Datatype::Fp32 | Datatype::Fp64)
                    && o.shape.len() == 2
                    && o.shape[1] > 1
            })
            .map(|o| o.shape[1] as usize);
        return Kind::Classifier {
            label: label.name.clone(),
            classes,
        };
    }
    match signature.outputs.as_slice() {
        [only]
            if matches!(only.datatype, Datatype::Fp32 | Datatype::Fp64) && per_row(&only.shape) =>
        {
            Kind::Regressor {
                output: only.name.clone(),
            }
        }
        _ => Kind::Other,
    }
}

/// The model's name from its file: `fraud.onnx` is fraud, `fraud/v1/model.onnx` is fraud.
fn default_name(path: &Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    let mut name = stem.to_string();
    if stem == "model" {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let folders: Vec<&str> = path
            .parent()
            .into_iter()
            .flat_map(|p| p.iter())
            .filter_map(|c| c.to_str())
            .filter(|c| !c.is_empty() && *c != "." && *c != "..")
            .collect();
        // A folder named like a version (v1, 2) is the version's; the model is above it.
        let version_like = |f: &str| {
            let digits = f.strip_prefix('v').unwrap_or(f);
            !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
        };
        if let Some(folder) = folders.iter().rev().find(|f| !version_like(f)) {
            name = folder.to_string();
        }
    }
    let cleaned: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c,
            _ => '-',
        })
        .collect();
    match cleaned.trim_matches(['-', '.']) {
        "" => "model".to_string(),
        kept => kept.to_string(),
    }
}

fn default_reference(model: &Path) -> PathBuf {
    let stem = model
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("model");
    model.with_file_name(format!("{stem}.reference.json"))
}

/// `path` as the config at `config_dir` should name it: relative when it is below or beside
/// it, so the folder can be moved or committed whole; absolute otherwise.
fn relative_to(path: &Path, config_dir: &Path) -> String {
    let (Ok(target), Ok(base)) = (path.canonicalize(), config_dir.canonicalize()) else {
        return path.display().to_string();
    };
    let common = target
        .components()
        .zip(base.components())
        .take_while(|(a, b)| a == b)
        .count();
    let ups = base.components().count() - common;
    if ups > 2 {
        return target.display().to_string();
    }
    let mut relative = PathBuf::new();
    for _ in 0..ups {
        relative.push("..");
    }
    for part in target.components().skip(common) {
        relative.push(part);
    }
    relative.display().to_string()
}

/// `count` values (the product of `shape`) nested by `shape`, as a reference file holds them;
/// `item(i)` gives the i-th in row-major order.
fn nest(shape: &[usize], item: &mut impl FnMut(usize) -> serde_json::Value) -> serde_json::Value {
    fn level(
        shape: &[usize],
        start: usize,
        stride: usize,
        item: &mut impl FnMut(usize) -> serde_json::Value,
    ) -> serde_json::Value {
        let Some((&count, inner_shape)) = shape.split_first() else {
            return item(start);
        };
        let inner = stride / count.max(1);
        serde_json::Value::Array(
            (0..count)
                .map(|i| level(inner_shape, start + i * inner, inner, item))
                .collect(),
        )
    }
    level(shape, 0, shape.iter().product(), item)
}

/// A tensor's elements nested by its shape.
fn nested(tensor: &Tensor) -> serde_json::Value {
    nest(&tensor.shape, &mut |i| tensor.data.json_value(i))
}

/// Made-up rows for an input whose dimensions are known but the first: values of the
/// input's type from a fixed seed, so that two runs write the same reference.
fn made_up(
    spec: &teal_core::protocol::TensorSpec,
    rows: usize,
    seed: u64,
) -> anyhow::Result<serde_json::Value> {
    let mut shape = Vec::new();
    for (i, d) in spec.shape.iter().enumerate() {
        match (i, *d) {
            (0, d) if d < 0 => shape.push(rows),
            (_, d) if d >= 0 => shape.push(d as usize),
            _ => bail!(
                "input '{}' has shape {:?}: its dimension {i} is not fixed in the model, so teal cannot make up rows for it; give --sample with real rows",
                spec.name,
                spec.shape
            ),
        }
    }
    let mut random = fastrand::Rng::with_seed(seed);
    Ok(nest(&shape, &mut |_| match spec.datatype {
        Datatype::Fp32 | Datatype::Fp64 => serde_json::json!(random.f32()),
        Datatype::Int32 | Datatype::Int64 => serde_json::json!(random.i64(0..10)),
        _ => serde_json::json!(random.bool()),
    }))
}

/// Decodes one input's nested rows as a V2 request would be, with the same checks.
fn decode_input(
    spec: &teal_core::protocol::TensorSpec,
    value: &serde_json::Value,
) -> anyhow::Result<Tensor> {
    onnx::decode_nested(spec, value).map_err(|e| anyhow::anyhow!("input '{}': {e}", spec.name))
}

fn describe(spec: &teal_core::protocol::TensorSpec) -> String {
    let dims: Vec<String> = spec
        .shape
        .iter()
        .map(|d| if *d < 0 { "?".into() } else { d.to_string() })
        .collect();
    format!("{} {} [{}]", spec.name, spec.datatype, dims.join(", "))
}

/// What the sample holds, once read.
struct Sample {
    rows: Vec<Row>,
    path: PathBuf,
}

impl Sample {
    fn features(&self) -> impl Iterator<Item = &[serde_json::Value]> {
        self.rows.iter().filter_map(Row::sample_features)
    }

    fn labelled(&self) -> usize {
        self.rows.iter().filter(|r| r.label().is_some()).count()
    }
}

pub async fn init(args: InitArgs) -> anyhow::Result<()> {
    let model_file = &args.model_file;
    if !model_file.is_file() {
        bail!(
            "{} is not a file: give the path of an ONNX model (see `teal init --help` for how to export one)",
            model_file.display()
        );
    }
    if args.rows == 0 {
        bail!("--rows must be 1 or more");
    }
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| default_name(model_file));
    let version = match (&args.version, args.reference_only) {
        (Some(version), _) => version.clone(),
        (None, false) => "v1".to_string(),
        (None, true) => bail!(
            "--reference-only is for a new version of a model already served: give its name with --version (like --version v2)"
        ),
    };
    for (what, value) in [("model name", &name), ("version", &version)] {
        if !teal_core::config::valid_name(value) {
            bail!(
                "'{value}' is not a valid {what}: use letters, digits, '-', '_' and '.' (not first), at most 128"
            );
        }
    }
    let reference_path = args
        .reference
        .clone()
        .unwrap_or_else(|| default_reference(model_file));
    if reference_path.exists() && !args.force {
        bail!(
            "{} exists: give --force to replace it, or --reference to write another file",
            reference_path.display()
        );
    }
    if !args.reference_only && args.config.exists() && !args.force {
        bail!(
            "{} exists: give --force to replace it, --config to write another file, or --reference-only to write only the new version's reference",
            args.config.display()
        );
    }

    let runtime =
        OnnxRuntime::load(args.onnxruntime.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (inputs, outputs) = onnx::inspect(&runtime, model_file).map_err(|e| {
        let said = e.to_string();
        let hint = if said.contains("Unsupported model IR version") {
            format!(
                "; the file was written by a newer onnx than ONNX Runtime {} reads: export it with an older IR version (onnx: `model.ir_version = 9` before saving) or opset",
                onnx::ONNXRUNTIME_VERSION
            )
        } else {
            String::new()
        };
        anyhow::anyhow!("{said}{hint}")
    })?;
    let problems: Vec<String> = inputs
        .iter()
        .map(|p| ("input", p))
        .chain(outputs.iter().map(|p| ("output", p)))
        .filter_map(|(side, Port { name, spec })| {
            spec.as_ref()
                .err()
                .map(|why| format!("{side} '{name}' is {why}"))
        })
        .collect();
    if !problems.is_empty() {
        bail!(
            "{} cannot be served as it was exported:\n  - {}",
            model_file.display(),
            problems.join("\n  - ")
        );
    }
    let signature = Signature {
        inputs: inputs.into_iter().filter_map(|p| p.spec.ok()).collect(),
        outputs: outputs.into_iter().filter_map(|p| p.spec.ok()).collect(),
    };
    let kind = kind_of(&signature);
    let mut warnings = Vec::new();
    for input in &signature.inputs {
        if input.shape.first().is_some_and(|d| *d >= 0) {
            warnings.push(format!(
                "input '{}' takes exactly {} row(s) per request: export it with a dynamic first dimension \
                 (skl2onnx: FloatTensorType([None, features]); torch.onnx.export: dynamic_axes={{'{}': {{0: 'batch'}}}}) \
                 so that clients may send several rows",
                input.name, input.shape[0], input.name
            ));
        }
    }
    if kind == Kind::Other {
        warnings.push(
            "no output looks like a class label (INT64, one per row) or a single regression value: \
             the gates compare the outputs element by element, and /v1/models/NAME/predict answers with the first output"
                .to_string(),
        );
    }

    // The rows the reference is made of: the sample's first ones, or made-up ones.
    let sample = match &args.sample {
        None => None,
        Some(path) => {
            let [input] = signature.inputs.as_slice() else {
                bail!(
                    "the model has {} inputs ({}); a sample holds one list of features per row, for a model with one [rows, features] input: leave --sample out to make the reference from made-up rows",
                    signature.inputs.len(),
                    signature
                        .inputs
                        .iter()
                        .map(describe)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            };
            if input.shape.first().is_some_and(|d| *d >= 0) {
                bail!(
                    "the model's input is {}: it takes exactly {} row(s) per request, so a sample of rows cannot be run through it; export it with a dynamic first dimension, or leave --sample out",
                    describe(input),
                    input.shape[0]
                );
            }
            if input.shape.len() != 2 {
                bail!(
                    "the model's input is {}; a sample holds one list of features per row, for a [rows, features] input: leave --sample out to make the reference from made-up rows",
                    describe(input)
                );
            }
            let rows = read_holdout(path).map_err(|e| anyhow::anyhow!("{e}"))?;
            let sample = Sample {
                rows,
                path: path.clone(),
            };
            let width = input.shape[1];
            for (i, features) in sample.features().enumerate() {
                if width >= 0 && features.len() != width as usize {
                    let csv_hint = if path
                        .extension()
                        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
                    {
                        " (in CSV the last column is the label)"
                    } else {
                        ""
                    };
                    bail!(
                        "row {} of {} has {} features but the model's input '{}' takes {width}{csv_hint}",
                        i + 1,
                        path.display(),
                        features.len(),
                        input.name
                    );
                }
            }
            Some(sample)
        }
    };
    let reference_inputs: BTreeMap<String, serde_json::Value> = match &sample {
        Some(sample) => {
            let rows: Vec<serde_json::Value> = sample
                .features()
                .take(args.rows)
                .map(|f| serde_json::Value::Array(f.to_vec()))
                .collect();
            BTreeMap::from([(
                signature.inputs[0].name.clone(),
                serde_json::Value::Array(rows),
            )])
        }
        None => signature
            .inputs
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                Ok((
                    spec.name.clone(),
                    made_up(spec, args.rows.min(32), i as u64 + 1)?,
                ))
            })
            .collect::<anyhow::Result<_>>()?,
    };
    if sample.is_none() {
        warnings.push(
            "no --sample: the reference is made of made-up rows, which prove the runtime and the file; give a sample of real rows so it covers the values the model will see, and the rollouts have evidence"
                .to_string(),
        );
    }
    let tensors = signature
        .inputs
        .iter()
        .map(|spec| decode_input(spec, &reference_inputs[&spec.name]))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let model = OnnxModel::load(&runtime, model_file, Default::default(), None, None)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let results = model.infer(tensors).await.map_err(|e| {
        anyhow::anyhow!(
            "{} does not run on the reference rows: {e}",
            model_file.display()
        )
    })?;
    let reference_rows = results
        .first()
        .and_then(|t| t.shape.first().copied())
        .unwrap_or(0);
    let reference = serde_json::json!({
        "inputs": reference_inputs,
        "outputs": results.iter().map(|t| (t.name.clone(), nested(t))).collect::<BTreeMap<_, _>>(),
    });

    // How often the model is right on the labelled sample: a wrong feature order or a
    // preprocessing step left out of the export shows up here, before any traffic does.
    let mut accuracy = None;
    if let (Some(sample), Kind::Classifier { label, .. }) = (&sample, &kind)
        && sample.labelled() > 0
    {
        let spec = &signature.inputs[0];
        let (mut right, mut counted) = (0usize, 0usize);
        let labelled: Vec<&Row> = sample.rows.iter().filter(|r| r.label().is_some()).collect();
        for chunk in labelled.chunks(256) {
            let rows: Vec<serde_json::Value> = chunk
                .iter()
                .filter_map(|r| r.sample_features())
                .map(|f| serde_json::Value::Array(f.to_vec()))
                .collect();
            let input = decode_input(spec, &serde_json::Value::Array(rows))?;
            let answers = model.infer(vec![input]).await.map_err(|e| {
                anyhow::anyhow!("{} does not run on the sample: {e}", model_file.display())
            })?;
            let Some(predicted) = answers.iter().find(|t| &t.name == label) else {
                break;
            };
            for (i, row) in chunk.iter().enumerate().take(predicted.data.len()) {
                counted += 1;
                if predicted.data.json_value(i).as_i64() == row.label() {
                    right += 1;
                }
            }
        }
        if counted > 0 {
            let share = right as f64 / counted as f64;
            if share < 0.5 {
                warnings.push(format!(
                    "the model is right on {:.1}% of the sample's labelled rows: check that the columns are in the order the model was trained on, and that the export holds every preprocessing step",
                    share * 100.0
                ));
            }
            accuracy = Some((share, counted));
        }
    }

    if let Some(folder) = reference_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(folder)
            .with_context(|| format!("cannot make the folder {}", folder.display()))?;
    }
    std::fs::write(&reference_path, serde_json::to_vec(&reference)?)
        .with_context(|| format!("cannot write {}", reference_path.display()))?;
    // The same check `teal serve` and `teal deploy` make before a version takes traffic.
    model
        .check_reference(&reference_path)
        .await
        .map_err(|e| anyhow::anyhow!("the reference just written does not check: {e}"))?;

    let prediction_output = match &kind {
        Kind::Classifier { label, .. } => Some(label.clone()),
        Kind::Regressor { output } => Some(output.clone()),
        Kind::Other => None,
    };
    let config_dir = match args.config.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(folder) => folder.to_path_buf(),
        None => PathBuf::from("."),
    };
    let mut next = Vec::new();
    let mut config_written = None;
    if args.reference_only {
        next.push(format!(
            "teal deploy {name} --version {} --onnx {} --reference {} --watch",
            version,
            model_file.display(),
            reference_path.display()
        ));
    } else {
        std::fs::create_dir_all(&config_dir)
            .with_context(|| format!("cannot make the folder {}", config_dir.display()))?;
        let text = config_text(&ConfigParts {
            name: &name,
            version: &version,
            model: relative_to(model_file, &config_dir),
            reference: relative_to(&reference_path, &config_dir),
            holdout: sample.as_ref().map(|s| relative_to(&s.path, &config_dir)),
            prediction_output: prediction_output.as_deref(),
            source: model_file
                .display()
                .to_string()
                .chars()
                .filter(|c| !c.is_control())
                .collect(),
        });
        teal_core::config::Config::parse(&text).map_err(|e| {
            anyhow::anyhow!("the config teal init made does not parse ({e}); this is a bug in teal")
        })?;
        std::fs::write(&args.config, text)
            .with_context(|| format!("cannot write {}", args.config.display()))?;
        config_written = Some(args.config.clone());
        next.push(format!("teal serve --config {}", args.config.display()));
        next.push(format!(
            "teal init NEW.onnx --name {name} --version v2 --reference-only   # then the teal deploy it prints"
        ));
    }

    if args.json {
        let report = serde_json::json!({
            "model": name,
            "version": version,
            "file": model_file,
            "inputs": signature.inputs.iter().map(|s| serde_json::json!({"name": s.name, "datatype": s.datatype, "shape": s.shape})).collect::<Vec<_>>(),
            "outputs": signature.outputs.iter().map(|s| serde_json::json!({"name": s.name, "datatype": s.datatype, "shape": s.shape})).collect::<Vec<_>>(),
            "kind": match &kind { Kind::Classifier { .. } => "classifier", Kind::Regressor { .. } => "regressor", Kind::Other => "other" },
            "classes": match &kind { Kind::Classifier { classes, .. } => serde_json::json!(classes), _ => serde_json::Value::Null },
            "prediction_output": prediction_output,
            "reference": reference_path,
            "reference_rows": reference_rows,
            "sample": sample.as_ref().map(|s| serde_json::json!({
                "file": s.path, "rows": s.rows.len(), "labelled": s.labelled(),
                "accuracy": accuracy.map(|(a, _)| a),
            })),
            "config": config_written,
            "warnings": warnings,
            "next": next,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("{name} {version}: {}", model_file.display());
    for spec in &signature.inputs {
        println!("  input   {}", describe(spec));
    }
    for spec in &signature.outputs {
        println!("  output  {}", describe(spec));
    }
    match &kind {
        Kind::Classifier { label, classes } => println!(
            "  a classifier: '{label}' is the predicted class{}",
            classes.map(|c| format!(", of {c}")).unwrap_or_default()
        ),
        Kind::Regressor { output } => println!("  a regressor: '{output}' is the prediction"),
        Kind::Other => {}
    }
    if let Some(sample) = &sample {
        print!(
            "  sample {}: {} rows, {} labelled",
            sample.path.display(),
            sample.rows.len(),
            sample.labelled()
        );
        match accuracy {
            Some((share, n)) => println!("; the model is right on {:.1}% of {n}", share * 100.0),
            None => println!(),
        }
    }
    println!(
        "wrote {} ({reference_rows} rows, checked as teal serve checks it)",
        reference_path.display()
    );
    if let Some(config) = &config_written {
        println!("wrote {}", config.display());
    }
    for warning in &warnings {
        println!("note: {warning}");
    }
    println!("next:");
    for command in &next {
        println!("  {command}");
    }
    Ok(())
}

struct ConfigParts<'a> {
    name: &'a str,
    version: &'a str,
    model: String,
    reference: String,
    holdout: Option<String>,
    prediction_output: Option<&'a str>,
    source: String,
}

/// A TOML string: JSON's quoting is a valid TOML basic string.
fn quoted(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

fn config_text(p: &ConfigParts) -> String {
    let name = p.name;
    let prediction = match p.prediction_output {
        Some(output) => format!(
            "# The output /v1/models/{name}/predict answers with.\nprediction_output = {}\n",
            quoted(output)
        ),
        None => String::new(),
    };
    let evidence = match &p.holdout {
        Some(holdout) => format!(
            "# A new version is validated against the live one on these rows before it takes traffic:\n\
             # with labels, it must be right about as often; without, it must mostly agree.\n\
             evidence = {{ holdout = {} }}\n",
            quoted(holdout)
        ),
        None => "# A new version is validated on live requests captured and replayed to both versions\n\
                 # (or: evidence = { holdout = \"labelled.jsonl\" }, or { shadow = 500 } mirrored requests).\n\
                 evidence = { replay = 1000 }\n"
            .to_string(),
    };
    format!(
        r#"# teal's configuration for {name}, written by `teal init` from {source}.
# Paths are relative to this file. Every setting and its default: examples/teal.toml in teal's
# sources, or the README.
#
#   teal serve --config THIS_FILE          serve it (the data plane on listen, the admin API on admin)
#   teal status                            what is live, from another terminal
#   curl -s localhost:8080/v2/models/{name}                          its inputs and outputs
#   teal init NEW.onnx --name {name} --version v2 --reference-only   a new version's reference
#   teal deploy {name} --version v2 --onnx NEW.onnx --reference NEW.reference.json --watch
#                                          load it beside the live one, validate, switch, watch

[server]
# Data plane: Open Inference Protocol V2 REST and the simple JSON endpoint.
listen = "127.0.0.1:8080"
# Admin API (status, deploy, switch, rollback, the dashboard): keep it on loopback.
admin = "127.0.0.1:8090"
# The state file (routing, rollouts, the audit trail) and the admin token.
state_dir = ".teal"

[[model]]
name = {name_quoted}
live = "blue"
{prediction}
[model.gates]
# Fields each version's card must carry before it may go live, like ["owner"].
card_fields = []

[model.rollout]
# Validate, then switch all at once; or a canary, such as
#   strategy = {{ kind = "canary", steps = [{{ percent = 10, pause_ms = "1m" }}, {{ percent = 50, pause_ms = "1m" }}] }}
strategy = {{ kind = "blue_green" }}
{evidence}# After the switch the rollback rules watch the new version this long, and the old one stays
# warm for an instant rollback this long.
observe_ms = "5m"
keep_warm_ms = "1d"

[model.blue]
version = {version}
kind = "onnx"
path = {model}
# The outputs this version must reproduce before it takes traffic (made by teal init).
reference = {reference}
"#,
        source = p.source,
        name_quoted = quoted(name),
        version = quoted(p.version),
        model = quoted(&p.model),
        reference = quoted(&p.reference),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use teal_core::protocol::{TensorData, TensorSpec};

    fn spec(name: &str, datatype: Datatype, shape: &[i64]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            datatype,
            shape: shape.to_vec(),
        }
    }

    #[test]
    fn the_name_comes_from_the_file_or_the_folder_above_the_version() {
        assert_eq!(default_name(Path::new("fraud.onnx")), "fraud");
        assert_eq!(
            default_name(Path::new("models/fraud/v1/model.onnx")),
            "fraud"
        );
        assert_eq!(default_name(Path::new("/model.onnx")), "model");
        assert_eq!(default_name(Path::new("/srv/2/model.onnx")), "srv");
        assert_eq!(
            default_name(Path::new("my model (final).onnx")),
            "my-model--final"
        );
    }

    #[test]
    fn outputs_tell_a_classifier_from_a_regressor() {
        let signature = |outputs| Signature {
            inputs: vec![spec("x", Datatype::Fp32, &[-1, 4])],
            outputs,
        };
        assert_eq!(
            kind_of(&signature(vec![
                spec("label", Datatype::Int64, &[-1]),
                spec("probabilities", Datatype::Fp32, &[-1, 3]),
            ])),
            Kind::Classifier {
                label: "label".into(),
                classes: Some(3)
            }
        );
        assert_eq!(
            kind_of(&signature(vec![spec("variable", Datatype::Fp32, &[-1, 1])])),
            Kind::Regressor {
                output: "variable".into()
            }
        );
        assert_eq!(
            kind_of(&signature(vec![spec("logits", Datatype::Fp32, &[-1, 10])])),
            Kind::Other
        );
    }

    #[test]
    fn tensors_are_nested_by_their_shape() {
        let tensor = Tensor {
            name: "p".into(),
            shape: vec![2, 3],
            data: TensorData::Int64(vec![1, 2, 3, 4, 5, 6]),
        };
        assert_eq!(nested(&tensor), serde_json::json!([[1, 2, 3], [4, 5, 6]]));
        let made = made_up(&spec("x", Datatype::Fp32, &[-1, 2, 2]), 3, 7).unwrap();
        let decoded = decode_input(&spec("x", Datatype::Fp32, &[-1, 2, 2]), &made).unwrap();
        assert_eq!(decoded.shape, vec![3, 2, 2]);
        assert!(made_up(&spec("x", Datatype::Fp32, &[-1, -1]), 3, 7).is_err());
    }

    #[test]
    fn the_written_config_parses_with_and_without_a_holdout() {
        for holdout in [None, Some("data/holdout.csv".to_string())] {
            let text = config_text(&ConfigParts {
                name: "fraud",
                version: "v1",
                model: "fraud.onnx".into(),
                reference: "fraud.reference.json".into(),
                holdout,
                prediction_output: Some("label"),
                source: "fraud.onnx".into(),
            });
            teal_core::config::Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        }
    }
}
