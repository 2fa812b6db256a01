//! In-process models on ONNX Runtime, loaded at run time from `libonnxruntime`.
//!
//! Each model has a few worker threads, each owning one session (an ONNX Runtime session
//! runs one inference at a time). The async side hands a job over a channel and awaits a
//! oneshot reply, so inference never blocks the runtime's threads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{DynValue, Tensor as OrtTensor, TensorElementType, ValueType};
use teal_core::protocol::{Datatype, ProtocolError, Signature, Tensor, TensorData, TensorSpec};
use tokio::sync::oneshot;

use super::{BackendError, LoadError, python_env};
use crate::metrics::InferenceHandles;

/// The ONNX Runtime release teal is built against.
pub const ONNXRUNTIME_VERSION: &str = "1.31.1";

/// The loaded ONNX Runtime library. It is process-wide: the library can be loaded once.
#[derive(Clone)]
pub struct OnnxRuntime {
    environment: ort::environment::Environment,
    pub library: PathBuf,
}

static RUNTIME: OnceLock<Result<OnnxRuntime, String>> = OnceLock::new();

fn install_hint() -> String {
    format!(
        "in a checkout of teal run `scripts/setup`, which installs onnxruntime=={ONNXRUNTIME_VERSION} into its .venv; \
         where teal was installed with pip, `pip install onnxruntime=={ONNXRUNTIME_VERSION}` into that same environment; \
         or set ORT_DYLIB_PATH to a libonnxruntime.so.{ONNXRUNTIME_VERSION}, or server.onnxruntime in the config"
    )
}

/// Where the library is: the configured path, then `ORT_DYLIB_PATH`, then the `onnxruntime`
/// package in teal's own Python environments ([`python_env::search_order`]), then in the
/// environment of the `python3` first on the PATH (found without importing it).
pub fn locate_library(configured: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = configured {
        return Ok(path.to_path_buf());
    }
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    search(&python_env::search_order(), "python3")
}

/// The library in the environments at `prefixes`, then in the environment of `python`.
fn search(prefixes: &[PathBuf], python: &str) -> Result<PathBuf, String> {
    let mut looked = Vec::new();
    for prefix in prefixes {
        for packages in python_env::package_dirs(prefix) {
            if let Some(library) = library_in_package(&packages.join("onnxruntime")) {
                return Ok(library);
            }
        }
        looked.push(prefix.display().to_string());
    }
    let probe = std::process::Command::new(python)
        .args([
            "-c",
            "import importlib.util as u; s = u.find_spec('onnxruntime'); print(s.submodule_search_locations[0] if s else '')",
        ])
        .stderr(std::process::Stdio::null())
        .output();
    if let Ok(output) = probe {
        let package = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if !package.is_empty()
            && let Some(library) = library_in_package(Path::new(&package))
        {
            return Ok(library);
        }
    }
    looked.push(format!("the environment of {python} on the PATH"));
    Err(format!(
        "ONNX Runtime library not found (looked in {}): {}",
        looked.join(", "),
        install_hint()
    ))
}

/// The library in an `onnxruntime` package folder: this release's, else the newest there.
fn library_in_package(package: &Path) -> Option<PathBuf> {
    let capi = package.join("capi");
    let exact = capi.join(format!("libonnxruntime.so.{ONNXRUNTIME_VERSION}"));
    if exact.is_file() {
        return Some(exact);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(&capi)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so."))
        })
        .collect();
    found.sort();
    found.pop()
}

impl OnnxRuntime {
    /// Loads the library once per process; later calls return the same runtime (or error).
    pub fn load(configured: Option<&Path>) -> Result<OnnxRuntime, LoadError> {
        RUNTIME
            .get_or_init(|| {
                let library = locate_library(configured)?;
                if !library.exists() {
                    return Err(format!("ONNX Runtime library {} does not exist: {}", library.display(), install_hint()));
                }
                let loaded = std::panic::catch_unwind(|| ort::init_from(&library)).map_err(|_| {
                    format!("loading ONNX Runtime from {} crashed: {}", library.display(), install_hint())
                })?;
                let builder = loaded.map_err(|e| {
                    format!("cannot load ONNX Runtime from {}: {e}; {}", library.display(), install_hint())
                })?;
                let environment = builder.with_name("teal").build().map_err(|e| {
                    format!(
                        "ONNX Runtime at {} did not start ({e}); teal needs version {ONNXRUNTIME_VERSION}: {}",
                        library.display(),
                        install_hint()
                    )
                })?;
                tracing::info!(library = %library.display(), "ONNX Runtime loaded");
                Ok(OnnxRuntime { environment, library })
            })
            .clone()
            .map_err(LoadError::Runtime)
    }
}

struct Job {
    inputs: Vec<Tensor>,
    /// The rows every input has (their common first dimension), when they agree and there
    /// are some: what a batch counts.
    rows: Option<usize>,
    /// When the job was queued.
    queued: Instant,
    /// Counts the job among the model's outstanding ones until it is dropped (only when the
    /// model batches: the count is what tells a lone request from one others will join).
    _outstanding: Option<Outstanding>,
    /// When the caller stops waiting, and the model's deadline in milliseconds: a job still
    /// queued then is not run.
    deadline: Option<(Instant, u64)>,
    /// The outputs, and how long the session took to compute them (the service time, apart
    /// from the time the job waited in the queue).
    reply: oneshot::Sender<(Result<Vec<Tensor>, BackendError>, Duration)>,
}

/// One job of a model not answered yet (queued, gathered or running), counted until it is
/// dropped.
struct Outstanding(Arc<AtomicUsize>);

impl Outstanding {
    fn new(count: &Arc<AtomicUsize>) -> Outstanding {
        count.fetch_add(1, Ordering::SeqCst);
        Outstanding(Arc::clone(count))
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A version's calls since it was loaded, as the statistics extension reports them: each
/// request's time in the queue and the time of the call it ran in, and the calls by the rows
/// they held.
#[derive(Default)]
pub struct CallStats {
    requests: std::sync::atomic::AtomicU64,
    queue_ns: std::sync::atomic::AtomicU64,
    compute_ns: std::sync::atomic::AtomicU64,
    calls: std::sync::atomic::AtomicU64,
    rows: std::sync::atomic::AtomicU64,
    /// Rows per call: (calls, their time in ns).
    by_rows: std::sync::Mutex<std::collections::BTreeMap<usize, (u64, u64)>>,
}

/// [`CallStats`] read at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallTotals {
    /// Requests run (alone or in a batch).
    pub requests: u64,
    /// Their time between being queued and their call starting.
    pub queue_ns: u64,
    /// The time of the calls they ran in, each request charged its call's whole time.
    pub compute_ns: u64,
    /// Calls of the model.
    pub calls: u64,
    /// Rows those calls held.
    pub rows: u64,
    /// Rows per call: how many calls held that many, and their time.
    pub by_rows: Vec<(usize, u64, u64)>,
}

impl CallStats {
    fn add(&self, rows: usize, waited: &[Duration], took: Duration) {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let n = waited.len() as u64;
        self.requests.fetch_add(n, Ordering::Relaxed);
        self.queue_ns
            .fetch_add(waited.iter().map(|w| ns(*w)).sum(), Ordering::Relaxed);
        self.compute_ns
            .fetch_add(ns(took).saturating_mul(n), Ordering::Relaxed);
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.rows.fetch_add(rows as u64, Ordering::Relaxed);
        let mut by_rows = self.by_rows.lock().unwrap_or_else(|p| p.into_inner());
        let entry = by_rows.entry(rows).or_default();
        entry.0 += 1;
        entry.1 = entry.1.saturating_add(ns(took));
    }

    /// The counts now.
    pub fn totals(&self) -> CallTotals {
        CallTotals {
            requests: self.requests.load(Ordering::Relaxed),
            queue_ns: self.queue_ns.load(Ordering::Relaxed),
            compute_ns: self.compute_ns.load(Ordering::Relaxed),
            calls: self.calls.load(Ordering::Relaxed),
            rows: self.rows.load(Ordering::Relaxed),
            by_rows: self
                .by_rows
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(rows, (calls, ns))| (*rows, *calls, *ns))
                .collect(),
        }
    }
}

/// A model served in-process.
pub struct OnnxModel {
    signature: Signature,
    /// Dropping the model closes the channel; each worker ends once its queue is answered.
    jobs: crossbeam_channel::Sender<Job>,
    /// How the workers batch requests, or why they do not although asked to.
    batching: Result<Option<Batching>, String>,
    /// The version's call series, once the slot is placed (the workers record into them).
    observer: Arc<OnceLock<InferenceHandles>>,
    /// Jobs not answered yet.
    outstanding: Arc<AtomicUsize>,
    /// The calls since the version was loaded.
    calls: Arc<CallStats>,
}

/// Dynamic batching as a model's workers apply it (`[model.batching]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batching {
    pub max_batch_size: usize,
    pub max_queue_delay: Duration,
    pub preferred_batch_sizes: Vec<usize>,
    /// Batch only if rows get the same bits in a batch as alone (checked at load).
    pub exact: bool,
}

impl Batching {
    pub fn from_config(config: &teal_core::config::BatchingConfig) -> Batching {
        Batching {
            max_batch_size: config.max_batch_size,
            max_queue_delay: Duration::from_micros(config.max_queue_delay_us),
            preferred_batch_sizes: config.preferred_batch_sizes.clone(),
            exact: config.exact,
        }
    }
}

/// Why requests to a model cannot be stacked into one call: an input or output whose first
/// dimension is fixed (or that has none), so it is not the rows.
fn unbatchable(signature: &Signature) -> Option<String> {
    let fixed = signature
        .inputs
        .iter()
        .map(|spec| ("input", spec))
        .chain(signature.outputs.iter().map(|spec| ("output", spec)))
        .find(|(_, spec)| spec.shape.first() != Some(&-1))?;
    let (what, spec) = fixed;
    Some(format!(
        "its {what} '{}' has shape {:?}, whose first dimension is not dynamic, so it is not the rows of a batch; export the model with a dynamic first dimension to batch it",
        spec.name, spec.shape
    ))
}

/// Checks that running rows together gives each row the bits it gets alone: the rows of the
/// version's reference inputs (at most 32), or without a reference 8 made-up rows (from a
/// fixed seed), run alone and in batches of 2, 3 and 8 rows and of `max_batch_size` (at most
/// 64). Why
/// not, when not. It is evidence on these rows, not a proof for every input.
fn check_exact(
    session: &mut Session,
    signature: &Signature,
    max_batch_size: usize,
    reference: Option<&Path>,
) -> Result<(), String> {
    let failed = |e: BackendError| {
        format!("running the check's rows failed ({e}), so it could not be checked")
    };
    let mut rows = reference
        .map(|path| reference_rows(signature, path))
        .unwrap_or_default();
    rows.truncate(32);
    if rows.is_empty() {
        let mut rng = fastrand::Rng::with_seed(0x7ea1);
        rows = (0..8)
            .map(|_| {
                signature
                    .inputs
                    .iter()
                    .map(|spec| made_up(spec, &mut rng))
                    .collect()
            })
            .collect();
    }
    let alone: Vec<Vec<Tensor>> = rows
        .iter()
        .map(|row| run(session, &signature.outputs, row.clone()))
        .collect::<Result<_, _>>()
        .map_err(failed)?;
    // Batches of 2, 3 and 8 rows, and the largest up to 64: a kernel that takes another path
    // for larger batches shows by then, and the check stays quick at load.
    let mut sizes = vec![2, 3, 8, max_batch_size.min(64)];
    sizes.retain(|&n| n >= 2 && n <= max_batch_size);
    sizes.dedup();
    // Every row in a batch of each size: consecutive rows, the last batch filled from the
    // first rows.
    let n = rows.len();
    let batches: Vec<(usize, Vec<usize>)> = sizes
        .into_iter()
        .flat_map(|size| {
            (0..n.div_ceil(size))
                .map(move |b| (size, (0..size).map(|k| (b * size + k) % n).collect()))
        })
        .collect();
    for (size, members) in batches {
        let stacked = stack(members.iter().map(|&i| rows[i].as_slice()), size);
        let outputs = run(session, &signature.outputs, stacked).map_err(failed)?;
        for (o, output) in outputs.iter().enumerate() {
            for (k, &i) in members.iter().enumerate() {
                let want = &alone[i][o];
                let per_row = want.data.len();
                let mut got = output.data.clone();
                let mut row = got.split_off((k * per_row).min(got.len()));
                if row.len() < per_row {
                    return Err(format!(
                        "its output '{}' does not have a row per input row",
                        output.name
                    ));
                }
                row.split_off(per_row);
                let (mut a, mut b) = (Vec::new(), Vec::new());
                row.write_le_bytes(&mut a);
                want.data.write_le_bytes(&mut b);
                if a != b {
                    return Err(format!(
                        "its output '{}' for a row differs in a batch of {size} rows from the same row run alone (ONNX Runtime computes one row by another path), so batching would change answers; set exact = false in [model.batching] to batch anyway, accepting answers that differ in their last bits",
                        output.name
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The rows of a reference file's inputs, each as a one-row request; none when the file
/// cannot be read (loading it as the reference reports why).
fn reference_rows(signature: &Signature, path: &Path) -> Vec<Vec<Tensor>> {
    let Some(reference) = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str::<ReferenceFile>(&text).ok())
    else {
        return Vec::new();
    };
    let mut inputs = Vec::new();
    for spec in &signature.inputs {
        match reference
            .inputs
            .get(&spec.name)
            .and_then(|value| decode_nested(spec, value).ok())
        {
            Some(input) => inputs.push(input),
            None => return Vec::new(),
        }
    }
    let Some(n) = rows_of(&inputs) else {
        return Vec::new();
    };
    let mut rows: Vec<Vec<Tensor>> = vec![Vec::new(); n];
    for mut input in inputs {
        let per_row = input.data.len() / n;
        for (i, row) in rows.iter_mut().enumerate().rev() {
            let mut shape = input.shape.clone();
            shape[0] = 1;
            row.push(Tensor {
                name: input.name.clone(),
                shape,
                data: input.data.split_off(i * per_row),
            });
        }
    }
    rows
}

/// One made-up row of an input: its dimensions past the first as the model gives them (1
/// where dynamic), with small values of its datatype.
fn made_up(spec: &TensorSpec, rng: &mut fastrand::Rng) -> Tensor {
    let mut shape: Vec<usize> = spec
        .shape
        .iter()
        .map(|&d| usize::try_from(d).unwrap_or(1).max(1))
        .collect();
    if shape.is_empty() {
        shape.push(1);
    }
    shape[0] = 1;
    let n: usize = shape.iter().product();
    let data = match spec.datatype {
        Datatype::Bool => TensorData::Bool((0..n).map(|_| rng.bool()).collect()),
        Datatype::Uint8 => TensorData::Uint8((0..n).map(|_| rng.u8(0..8)).collect()),
        Datatype::Uint16 => TensorData::Uint16((0..n).map(|_| rng.u16(0..8)).collect()),
        Datatype::Uint32 => TensorData::Uint32((0..n).map(|_| rng.u32(0..8)).collect()),
        Datatype::Uint64 => TensorData::Uint64((0..n).map(|_| rng.u64(0..8)).collect()),
        Datatype::Int8 => TensorData::Int8((0..n).map(|_| rng.i8(0..8)).collect()),
        Datatype::Int16 => TensorData::Int16((0..n).map(|_| rng.i16(0..8)).collect()),
        Datatype::Int32 => TensorData::Int32((0..n).map(|_| rng.i32(0..8)).collect()),
        Datatype::Int64 => TensorData::Int64((0..n).map(|_| rng.i64(0..8)).collect()),
        Datatype::Fp16 => TensorData::Fp16(
            (0..n)
                .map(|_| half::f16::from_f32(rng.f32() * 2.0 - 1.0).to_bits())
                .collect(),
        ),
        Datatype::Bf16 => TensorData::Bf16(
            (0..n)
                .map(|_| half::bf16::from_f32(rng.f32() * 2.0 - 1.0).to_bits())
                .collect(),
        ),
        Datatype::Fp32 => TensorData::Fp32((0..n).map(|_| rng.f32() * 2.0 - 1.0).collect()),
        Datatype::Fp64 => TensorData::Fp64((0..n).map(|_| rng.f64() * 2.0 - 1.0).collect()),
        Datatype::Bytes => TensorData::Bytes(
            (0..n)
                .map(|_| {
                    (0..rng.usize(1..6))
                        .map(|_| ["good", "bad", "price", "very", "not"][rng.usize(0..5)])
                        .collect::<Vec<_>>()
                        .join(" ")
                        .into_bytes()
                })
                .collect(),
        ),
    };
    Tensor {
        name: spec.name.clone(),
        shape,
        data,
    }
}

/// Requests' inputs stacked along the first dimension into one call's, `rows` in all; the
/// requests agree on everything else ([`fits`]).
fn stack<'a>(mut requests: impl Iterator<Item = &'a [Tensor]>, rows: usize) -> Vec<Tensor> {
    let Some(first) = requests.next() else {
        return Vec::new();
    };
    let mut stacked: Vec<Tensor> = first
        .iter()
        .map(|input| {
            let mut shape = input.shape.clone();
            shape[0] = rows;
            Tensor {
                name: input.name.clone(),
                shape,
                data: input.data.clone(),
            }
        })
        .collect();
    for request in requests {
        for (into, input) in stacked.iter_mut().zip(request) {
            into.data.extend_from(&input.data);
        }
    }
    stacked
}

/// Whether `job` can join a batch that began with `first`: the same inputs, of the same
/// datatypes, agreeing on every dimension but the first.
fn fits(first: &Job, job: &Job) -> bool {
    first.inputs.len() == job.inputs.len()
        && first.inputs.iter().zip(&job.inputs).all(|(a, b)| {
            a.name == b.name
                && a.data.datatype() == b.data.datatype()
                && a.shape.len() == b.shape.len()
                && a.shape[1..] == b.shape[1..]
        })
}

/// The rows of a request: the first dimension its inputs share, if they share one and it is
/// not 0.
fn rows_of(inputs: &[Tensor]) -> Option<usize> {
    let rows = *inputs.first()?.shape.first()?;
    // A request with no elements at all (a dimension of 0 past the first) says nothing
    // about its rows: any first dimension fits no data. It runs alone.
    (rows > 0
        && inputs
            .iter()
            .all(|t| t.shape.first() == Some(&rows) && !t.data.is_empty()))
    .then_some(rows)
}

fn datatype_of(ty: TensorElementType) -> Option<Datatype> {
    Some(match ty {
        TensorElementType::Float32 => Datatype::Fp32,
        TensorElementType::Float64 => Datatype::Fp64,
        TensorElementType::Float16 => Datatype::Fp16,
        TensorElementType::Bfloat16 => Datatype::Bf16,
        TensorElementType::Int8 => Datatype::Int8,
        TensorElementType::Int16 => Datatype::Int16,
        TensorElementType::Int32 => Datatype::Int32,
        TensorElementType::Int64 => Datatype::Int64,
        TensorElementType::Uint8 => Datatype::Uint8,
        TensorElementType::Uint16 => Datatype::Uint16,
        TensorElementType::Uint32 => Datatype::Uint32,
        TensorElementType::Uint64 => Datatype::Uint64,
        TensorElementType::Bool => Datatype::Bool,
        TensorElementType::String => Datatype::Bytes,
        _ => return None,
    })
}

/// Why teal cannot serve a tensor of this type, and how to export it so that it can.
fn unsupported_advice(dtype: &ValueType) -> String {
    match dtype {
        ValueType::Sequence(inner) if matches!(**inner, ValueType::Map { .. }) => {
            "a sequence of maps, which is scikit-learn's ZipMap: export the classifier with ZipMap off \
             (skl2onnx: `to_onnx(model, X, options={'zipmap': False})`), so its probabilities are one \
             FP32 [rows, classes] tensor"
                .to_string()
        }
        ValueType::Tensor { ty, .. } => format!(
            "a tensor of {ty:?}, which the V2 protocol has no datatype for: cast it in the export"
        ),
        other => format!(
            "{other:?}, which teal does not serve (tensors of the V2 datatypes: numbers, BOOL, strings)"
        ),
    }
}

/// The tensor spec of an input or output, or why teal cannot serve it.
fn port_spec(name: &str, dtype: &ValueType) -> Result<TensorSpec, String> {
    match dtype {
        ValueType::Tensor { ty, shape, .. } if datatype_of(*ty).is_some() => Ok(TensorSpec {
            name: name.to_string(),
            datatype: datatype_of(*ty).unwrap_or(Datatype::Fp32),
            shape: shape.iter().map(|d| if *d < 0 { -1 } else { *d }).collect(),
        }),
        other => Err(unsupported_advice(other)),
    }
}

fn spec_of(name: &str, dtype: &ValueType, path: &Path) -> Result<TensorSpec, LoadError> {
    port_spec(name, dtype).map_err(|advice| LoadError::Model {
        path: path.display().to_string(),
        reason: format!("'{name}' is {advice}"),
    })
}

/// An input or output of a model file as `teal init` reports it: its spec, or why teal
/// cannot serve it and how to export it so that it can.
pub struct Port {
    pub name: String,
    pub spec: Result<TensorSpec, String>,
}

/// Opens `path` in one session and lists its inputs and outputs without refusing any, so
/// that every problem of an export can be reported at once.
pub fn inspect(runtime: &OnnxRuntime, path: &Path) -> Result<(Vec<Port>, Vec<Port>), LoadError> {
    let bytes = std::fs::read(path).map_err(|e| LoadError::Model {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let session = session(runtime, &bytes, path, Execution::default())?;
    let ports = |outlets: &[ort::value::Outlet]| {
        outlets
            .iter()
            .map(|o| Port {
                name: o.name().to_string(),
                spec: port_spec(o.name(), o.dtype()),
            })
            .collect::<Vec<_>>()
    };
    Ok((ports(session.inputs()), ports(session.outputs())))
}

/// How an in-process model runs: its sessions (workers) and each session's ONNX Runtime
/// settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Execution {
    pub workers: usize,
    pub intra_op_threads: usize,
    pub inter_op_threads: usize,
    pub optimization: teal_core::config::Optimization,
}

impl Default for Execution {
    /// One session with one thread and every graph optimisation, as `teal init` checks a
    /// model.
    fn default() -> Execution {
        Execution {
            workers: 1,
            intra_op_threads: 1,
            inter_op_threads: 1,
            optimization: teal_core::config::Optimization::All,
        }
    }
}

fn session(
    runtime: &OnnxRuntime,
    bytes: &[u8],
    path: &Path,
    execution: Execution,
) -> Result<Session, LoadError> {
    use teal_core::config::Optimization;
    let failed = |e: ort::Error| LoadError::Model {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let level = match execution.optimization {
        Optimization::Disable => GraphOptimizationLevel::Disable,
        Optimization::Basic => GraphOptimizationLevel::Level1,
        Optimization::Extended => GraphOptimizationLevel::Level2,
        Optimization::All => GraphOptimizationLevel::Level3,
    };
    Session::builder(&runtime.environment)
        .map_err(failed)?
        .with_optimization_level(level)
        .map_err(|e| failed(e.into()))?
        .with_intra_threads(execution.intra_op_threads)
        .map_err(|e| failed(e.into()))?
        .with_inter_threads(execution.inter_op_threads)
        .map_err(|e| failed(e.into()))?
        // Inter-op threads only run branches at once in parallel execution.
        .with_parallel_execution(execution.inter_op_threads > 1)
        .map_err(|e| failed(e.into()))?
        .commit_from_memory(bytes)
        .map_err(failed)
}

fn to_value(tensor: Tensor) -> ort::Result<DynValue> {
    let shape = tensor.shape;
    let bits16 = |v: Vec<u16>| v.into_iter();
    Ok(match tensor.data {
        TensorData::Fp32(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Fp64(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Fp16(v) => {
            let v: Vec<half::f16> = bits16(v).map(half::f16::from_bits).collect();
            OrtTensor::from_array((shape, v))?.into_dyn()
        }
        TensorData::Bf16(v) => {
            let v: Vec<half::bf16> = bits16(v).map(half::bf16::from_bits).collect();
            OrtTensor::from_array((shape, v))?.into_dyn()
        }
        TensorData::Int8(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Int16(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Int32(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Int64(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Uint8(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Uint16(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Uint32(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Uint64(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Bool(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Bytes(v) => {
            // ONNX strings are UTF-8; the caller's bytes were checked to be (`check_text`).
            let v: Vec<String> = v
                .into_iter()
                .map(|b| {
                    String::from_utf8(b)
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
                })
                .collect();
            OrtTensor::from_string_array((shape, v.as_slice()))?.into_dyn()
        }
    })
}

/// A BYTES input an ONNX model takes must be text: ONNX string tensors hold UTF-8. Called
/// before the request is run, so the caller gets a 400 naming the element.
pub fn check_text(inputs: &[Tensor]) -> Result<(), ProtocolError> {
    for input in inputs {
        if let TensorData::Bytes(elements) = &input.data
            && let Some(index) = elements
                .iter()
                .position(|e| std::str::from_utf8(e).is_err())
        {
            return Err(ProtocolError::Unsupported(format!(
                "input '{}': element {index} is not UTF-8 text, which the model's string input holds: send text",
                input.name
            )));
        }
    }
    Ok(())
}

fn from_value(spec: &TensorSpec, value: &DynValue) -> ort::Result<Tensor> {
    fn parts<T: ort::value::PrimitiveTensorElementType + Clone>(
        value: &DynValue,
    ) -> ort::Result<(Vec<usize>, Vec<T>)> {
        let (shape, data) = value.try_extract_tensor::<T>()?;
        Ok((
            shape.iter().map(|d| (*d).max(0) as usize).collect(),
            data.to_vec(),
        ))
    }
    let (shape, data) = match spec.datatype {
        Datatype::Fp32 => parts::<f32>(value).map(|(s, d)| (s, TensorData::Fp32(d)))?,
        Datatype::Fp64 => parts::<f64>(value).map(|(s, d)| (s, TensorData::Fp64(d)))?,
        Datatype::Fp16 => parts::<half::f16>(value).map(|(s, d)| {
            (
                s,
                TensorData::Fp16(d.into_iter().map(half::f16::to_bits).collect()),
            )
        })?,
        Datatype::Bf16 => parts::<half::bf16>(value).map(|(s, d)| {
            (
                s,
                TensorData::Bf16(d.into_iter().map(half::bf16::to_bits).collect()),
            )
        })?,
        Datatype::Int8 => parts::<i8>(value).map(|(s, d)| (s, TensorData::Int8(d)))?,
        Datatype::Int16 => parts::<i16>(value).map(|(s, d)| (s, TensorData::Int16(d)))?,
        Datatype::Int32 => parts::<i32>(value).map(|(s, d)| (s, TensorData::Int32(d)))?,
        Datatype::Int64 => parts::<i64>(value).map(|(s, d)| (s, TensorData::Int64(d)))?,
        Datatype::Uint8 => parts::<u8>(value).map(|(s, d)| (s, TensorData::Uint8(d)))?,
        Datatype::Uint16 => parts::<u16>(value).map(|(s, d)| (s, TensorData::Uint16(d)))?,
        Datatype::Uint32 => parts::<u32>(value).map(|(s, d)| (s, TensorData::Uint32(d)))?,
        Datatype::Uint64 => parts::<u64>(value).map(|(s, d)| (s, TensorData::Uint64(d)))?,
        Datatype::Bool => parts::<bool>(value).map(|(s, d)| (s, TensorData::Bool(d)))?,
        Datatype::Bytes => {
            let (shape, data) = value.try_extract_strings()?;
            (
                shape.iter().map(|d| (*d).max(0) as usize).collect(),
                TensorData::Bytes(data.into_iter().map(String::into_bytes).collect()),
            )
        }
    };
    Ok(Tensor {
        name: spec.name.clone(),
        shape,
        data,
    })
}

fn run(
    session: &mut Session,
    outputs: &[TensorSpec],
    inputs: Vec<Tensor>,
) -> Result<Vec<Tensor>, BackendError> {
    let failed = |e: ort::Error| BackendError::Inference(e.to_string());
    let values: Vec<(String, DynValue)> = inputs
        .into_iter()
        .map(|t| Ok((t.name.clone(), to_value(t)?)))
        .collect::<ort::Result<_>>()
        .map_err(failed)?;
    let results = session.run(values).map_err(failed)?;
    outputs
        .iter()
        .map(|spec| {
            let value = results.get(&spec.name).ok_or_else(|| {
                BackendError::Inference(format!(
                    "output '{}' is missing from the model's results",
                    spec.name
                ))
            })?;
            from_value(spec, value).map_err(failed)
        })
        .collect()
}

/// One session on its own thread, taking jobs off the model's queue.
struct Worker {
    session: Session,
    outputs: Vec<TensorSpec>,
    jobs: crossbeam_channel::Receiver<Job>,
    batching: Option<Batching>,
    observer: Arc<OnceLock<InferenceHandles>>,
    /// The model's jobs not answered yet, this batch's included.
    outstanding: Arc<AtomicUsize>,
    calls: Arc<CallStats>,
}

impl Worker {
    /// Serves jobs until the model is dropped and its queue is answered. With batching, a
    /// job that cannot join the batch being gathered starts the next one.
    fn serve(mut self) {
        let mut next: Option<Job> = None;
        loop {
            let job = match next.take() {
                Some(job) => job,
                None => match self.jobs.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                },
            };
            let Some(job) = self.wanted(job) else {
                continue;
            };
            let batchable = match (&self.batching, job.rows) {
                (Some(plan), Some(rows)) => rows < plan.max_batch_size,
                _ => false,
            };
            if batchable {
                let (batch, left) = self.gather(job);
                next = left;
                self.run_batch(batch);
            } else {
                self.run_one(job);
            }
        }
    }

    /// The job, if its caller still waits for it: work nobody waits for any more (the client
    /// went away, or its deadline passed while the job was queued) is not run.
    fn wanted(&self, job: Job) -> Option<Job> {
        if job.reply.is_closed() {
            return None;
        }
        if let Some((deadline, ms)) = job.deadline
            && Instant::now() >= deadline
        {
            let late = Err(BackendError::Deadline { ms });
            let _ = job.reply.send((late, Duration::ZERO));
            return None;
        }
        Some(job)
    }

    /// A batch that begins with `first`: the jobs queued behind it that fit, in order, until
    /// it holds `max_batch_size` rows, or reaches a preferred size with nothing more queued,
    /// or the first job has waited `max_queue_delay`. It does not wait when no other request
    /// of the model is outstanding (queued, or running on another worker): then nothing
    /// says another is coming, and a lone caller would only be made late. The job that ended
    /// it by not fitting is returned too, to begin the next.
    fn gather(&self, first: Job) -> (Vec<Job>, Option<Job>) {
        use crossbeam_channel::TryRecvError;
        let Some(plan) = &self.batching else {
            return (vec![first], None);
        };
        let mut rows = first.rows.unwrap_or(0);
        let until = first.queued + plan.max_queue_delay;
        let mut batch = vec![first];
        while rows < plan.max_batch_size {
            let job = match self.jobs.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    if plan.preferred_batch_sizes.contains(&rows)
                        || self.outstanding.load(Ordering::SeqCst) <= batch.len()
                    {
                        break;
                    }
                    let now = Instant::now();
                    if now >= until {
                        break;
                    }
                    match self.jobs.recv_timeout(until - now) {
                        Ok(job) => job,
                        Err(_) => break,
                    }
                }
            };
            let Some(job) = self.wanted(job) else {
                continue;
            };
            match job.rows {
                Some(more) if more <= plan.max_batch_size - rows && fits(&batch[0], &job) => {
                    rows += more;
                    batch.push(job);
                }
                _ => return (batch, Some(job)),
            }
        }
        (batch, None)
    }

    fn run_one(&mut self, job: Job) {
        let started = Instant::now();
        let result = run(&mut self.session, &self.outputs, job.inputs);
        let took = started.elapsed();
        self.record(
            job.rows.unwrap_or(0),
            &[started.saturating_duration_since(job.queued)],
            took,
        );
        // The caller may have gone away (client disconnected); that is fine.
        let _ = job.reply.send((result, took));
    }

    /// Runs the jobs as one call on their inputs stacked along the first dimension, and
    /// gives each caller its own rows of every output. Should the call fail, or an output
    /// not have a row per input row, each job is run on its own, so that one request's
    /// failure is its alone.
    fn run_batch(&mut self, mut batch: Vec<Job>) {
        if batch.len() == 1 {
            return self.run_one(batch.remove(0));
        }
        let rows: Vec<usize> = batch.iter().map(|job| job.rows.unwrap_or(0)).collect();
        let total: usize = rows.iter().sum();
        if total == 0 {
            for job in batch {
                self.run_one(job);
            }
            return;
        }
        let stacked = stack(batch.iter().map(|job| job.inputs.as_slice()), total);
        let started = Instant::now();
        let result = run(&mut self.session, &self.outputs, stacked);
        let took = started.elapsed();
        let outputs = match result {
            Ok(outputs) if outputs.iter().all(|o| o.shape.first() == Some(&total)) => outputs,
            _ => {
                for job in batch {
                    self.run_one(job);
                }
                return;
            }
        };
        let waited: Vec<Duration> = batch
            .iter()
            .map(|job| started.saturating_duration_since(job.queued))
            .collect();
        self.record(total, &waited, took);
        // Every output is cut into each job's rows, from the last job's back to the first's.
        let mut parts: Vec<Vec<Tensor>> = (0..batch.len())
            .map(|_| Vec::with_capacity(outputs.len()))
            .collect();
        for mut output in outputs {
            let per_row = output.data.len() / total;
            let mut end = total;
            for (k, &n) in rows.iter().enumerate().rev() {
                end -= n;
                let mut shape = output.shape.clone();
                shape[0] = n;
                parts[k].push(Tensor {
                    name: output.name.clone(),
                    shape,
                    data: output.data.split_off(end * per_row),
                });
            }
        }
        for ((job, part), n) in batch.into_iter().zip(parts).zip(rows) {
            // The service time a job is charged: its rows' share of the call.
            let share = took.mul_f64(n as f64 / total as f64);
            let _ = job.reply.send((Ok(part), share));
        }
    }

    /// Counts a call once the version serves (the checks at load are not its traffic).
    fn record(&self, rows: usize, waited: &[Duration], took: Duration) {
        if let Some(handles) = self.observer.get() {
            self.calls.add(rows, waited, took);
            handles.batch_rows.observe(rows as f64);
            for wait in waited {
                handles.queue.observe(wait.as_secs_f64());
            }
            handles.compute.observe(took.as_secs_f64());
        }
    }
}

impl OnnxModel {
    /// Loads `path` into `execution.workers` sessions, each on its own thread. With
    /// `batching`, requests that arrive together are run as one call, unless the model's
    /// first dimensions are fixed or (with `exact`) a batch changes a row's answer, checked
    /// on the rows of `reference` (then it runs unbatched and says why, in the log and in
    /// [`OnnxModel::batching`]).
    pub fn load(
        runtime: &OnnxRuntime,
        path: &Path,
        execution: Execution,
        batching: Option<Batching>,
        reference: Option<&Path>,
    ) -> Result<OnnxModel, LoadError> {
        let bytes = std::fs::read(path).map_err(|e| LoadError::Model {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let workers = execution.workers;
        let first = session(runtime, &bytes, path, execution)?;
        let signature = Signature {
            inputs: first
                .inputs()
                .iter()
                .map(|o| spec_of(o.name(), o.dtype(), path))
                .collect::<Result<_, _>>()?,
            outputs: first
                .outputs()
                .iter()
                .map(|o| spec_of(o.name(), o.dtype(), path))
                .collect::<Result<_, _>>()?,
        };
        let mut sessions = vec![first];
        for _ in 1..workers.max(1) {
            sessions.push(session(runtime, &bytes, path, execution)?);
        }
        let batching = match batching {
            None => Ok(None),
            Some(plan) => {
                let checked = match unbatchable(&signature) {
                    Some(reason) => Err(reason),
                    None if plan.exact => {
                        check_exact(&mut sessions[0], &signature, plan.max_batch_size, reference)
                    }
                    None => Ok(()),
                };
                match checked {
                    Ok(()) => Ok(Some(plan)),
                    Err(reason) => {
                        tracing::warn!(model = %path.display(), "batching is off for this model: {reason}");
                        Err(reason)
                    }
                }
            }
        };
        let observer = Arc::new(OnceLock::new());
        let outstanding = Arc::new(AtomicUsize::new(0));
        let calls = Arc::new(CallStats::default());
        let (sender, receiver) = crossbeam_channel::unbounded::<Job>();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("model")
            .to_string();
        for (i, session) in sessions.into_iter().enumerate() {
            let worker = Worker {
                session,
                outputs: signature.outputs.clone(),
                jobs: receiver.clone(),
                batching: batching.clone().ok().flatten(),
                observer: Arc::clone(&observer),
                outstanding: Arc::clone(&outstanding),
                calls: Arc::clone(&calls),
            };
            std::thread::Builder::new()
                .name(format!("onnx-{name}-{i}"))
                .spawn(move || worker.serve())
                .map_err(|e| LoadError::Model {
                    path: path.display().to_string(),
                    reason: format!("cannot start a worker thread: {e}"),
                })?;
        }
        Ok(OnnxModel {
            signature,
            jobs: sender,
            batching,
            observer,
            outstanding,
            calls,
        })
    }

    /// The version's calls since it was loaded.
    pub fn calls(&self) -> CallTotals {
        self.calls.totals()
    }

    /// How the model batches requests (`Ok(None)`: it was not asked to), or why it does not
    /// although it was asked to.
    pub fn batching(&self) -> &Result<Option<Batching>, String> {
        &self.batching
    }

    /// Gives the workers the version's call series to record into; the first call wins.
    pub fn observe(&self, handles: impl FnOnce() -> InferenceHandles) {
        self.observer.get_or_init(handles);
    }

    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    pub async fn infer(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError> {
        self.infer_timed(inputs).await.0
    }

    /// Runs one inference and says how long the session itself took, without the time the
    /// job waited for a free worker: the validation compares versions on that service time,
    /// so a queue that one slot happened to meet does not read as a slower model.
    pub async fn infer_timed(
        &self,
        inputs: Vec<Tensor>,
    ) -> (Result<Vec<Tensor>, BackendError>, Option<Duration>) {
        self.infer_until(inputs, None).await
    }

    /// As [`OnnxModel::infer_timed`], for a caller that stops waiting at `deadline`: a job
    /// still queued then is dropped without running.
    pub async fn infer_until(
        &self,
        inputs: Vec<Tensor>,
        deadline: Option<(tokio::time::Instant, u64)>,
    ) -> (Result<Vec<Tensor>, BackendError>, Option<Duration>) {
        let (reply, answer) = oneshot::channel();
        let deadline = deadline.map(|(at, ms)| (at.into_std(), ms));
        if self
            .jobs
            .send(Job {
                rows: rows_of(&inputs),
                inputs,
                queued: Instant::now(),
                _outstanding: matches!(self.batching, Ok(Some(_)))
                    .then(|| Outstanding::new(&self.outstanding)),
                deadline,
                reply,
            })
            .is_err()
        {
            return (Err(BackendError::Unavailable), None);
        }
        match answer.await {
            Ok((result, service)) => (result, Some(service)),
            Err(_) => (Err(BackendError::Unavailable), None),
        }
    }

    /// Runs the reference inputs shipped with a version and compares the outputs: a model
    /// that loads and runs can still be wrong, so it must reproduce them before taking traffic.
    /// Integer outputs must match exactly; float outputs within 1e-5 (relative, at least absolute).
    pub async fn check_reference(&self, path: &Path) -> Result<usize, LoadError> {
        let failed = |reason: String| LoadError::Reference {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
        let reference: ReferenceFile = serde_json::from_str(&text)
            .map_err(|e| failed(format!("not a reference file: {e}")))?;
        let mut inputs = Vec::new();
        let mut rows = 0;
        for spec in &self.signature.inputs {
            let value = reference
                .inputs
                .get(&spec.name)
                .ok_or_else(|| failed(format!("has no input '{}'", spec.name)))?;
            let input = decode_nested(spec, value)
                .map_err(|e| failed(format!("input '{}': {e}", spec.name)))?;
            rows = input.shape.first().copied().unwrap_or(0);
            inputs.push(input);
        }
        let outputs = self
            .infer(inputs)
            .await
            .map_err(|e| failed(e.to_string()))?;
        for output in &outputs {
            let Some(expected) = reference.outputs.get(&output.name) else {
                continue;
            };
            let mut flat = Vec::new();
            flatten(expected, &mut flat);
            if flat.len() != output.data.len() {
                return Err(failed(format!(
                    "output '{}' has {} values, the reference {}",
                    output.name,
                    output.data.len(),
                    flat.len()
                )));
            }
            for (i, want) in flat.iter().enumerate() {
                let got = output.data.json_value(i).as_f64().unwrap_or(f64::NAN);
                let exact = matches!(
                    output.data,
                    TensorData::Int32(_) | TensorData::Int64(_) | TensorData::Bool(_)
                );
                let tolerance = if exact {
                    0.0
                } else {
                    1e-5 * want.abs().max(1.0)
                };
                if (got - want).abs() > tolerance || got.is_nan() != want.is_nan() {
                    return Err(failed(format!(
                        "output '{}' differs from the reference at element {i}: got {got}, expected {want}; the runtime or the model file is not the one the reference was made with",
                        output.name
                    )));
                }
            }
        }
        Ok(rows)
    }
}

#[derive(serde::Deserialize)]
struct ReferenceFile {
    inputs: BTreeMap<String, serde_json::Value>,
    outputs: BTreeMap<String, serde_json::Value>,
}

/// One input given as nested lists (as a reference file holds it), decoded and checked
/// against its spec as the same tensor in a V2 request would be.
pub fn decode_nested(
    spec: &TensorSpec,
    value: &serde_json::Value,
) -> Result<Tensor, teal_core::protocol::ProtocolError> {
    let body = serde_json::json!({"inputs": [{"name": spec.name, "shape": shape_of(value), "datatype": spec.datatype, "data": value}]});
    let single = Signature {
        inputs: vec![spec.clone()],
        outputs: vec![],
    };
    let mut request = teal_core::protocol::InferRequest::decode(
        body.to_string().as_bytes(),
        None,
        Some(&single),
    )?;
    Ok(request.inputs.remove(0))
}

fn shape_of(value: &serde_json::Value) -> Vec<usize> {
    let mut shape = Vec::new();
    let mut current = value;
    while let serde_json::Value::Array(items) = current {
        shape.push(items.len());
        match items.first() {
            Some(first) => current = first,
            None => break,
        }
    }
    shape
}

fn flatten(value: &serde_json::Value, out: &mut Vec<f64>) {
    match value {
        serde_json::Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        serde_json::Value::Bool(b) => out.push(f64::from(u8::from(*b))),
        other => out.push(other.as_f64().unwrap_or(f64::NAN)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(what: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "teal-onnx-{what}-{}-{:x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_library_is_taken_from_the_first_environment_that_has_it() {
        let (empty, venv) = (temp("empty"), temp("venv"));
        std::fs::create_dir_all(empty.join("lib/python3.11/site-packages")).unwrap();
        let capi = venv.join("lib/python3.12/site-packages/onnxruntime/capi");
        std::fs::create_dir_all(&capi).unwrap();
        for name in [
            "libonnxruntime.so.1.30.0".to_string(),
            format!("libonnxruntime.so.{ONNXRUNTIME_VERSION}"),
            "libonnxruntime_providers_shared.so".to_string(),
        ] {
            std::fs::write(capi.join(name), b"").unwrap();
        }
        let found = search(&[empty, venv], "/nonexistent/python3").unwrap();
        assert_eq!(
            found,
            capi.join(format!("libonnxruntime.so.{ONNXRUNTIME_VERSION}"))
        );
    }

    #[test]
    fn without_the_library_anywhere_the_error_says_where_it_looked_and_what_to_install() {
        let empty = temp("nothing");
        let error = search(std::slice::from_ref(&empty), "/nonexistent/python3").unwrap_err();
        assert!(error.contains(&empty.display().to_string()), "{error}");
        assert!(error.contains("/nonexistent/python3"), "{error}");
        assert!(error.contains("scripts/setup"), "{error}");
        assert!(
            error.contains(&format!("pip install onnxruntime=={ONNXRUNTIME_VERSION}")),
            "{error}"
        );
        assert!(error.contains("ORT_DYLIB_PATH"), "{error}");
    }
}
