//! Loading, quantizing and checking the models S1 serves.

use tandem_grpc::OrStatus;
use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tandem_core::ModelInfo;
use tandem_grpc::v1 as pb;
use tandem_model::{Model, OutputMode, QuantConfig, QuantizedModel};
use tandem_lattice_engine::tandem_lattice::Context as LatticeContext;
use tandem_lattice_engine::LatticeModel;
use tandem_paillier::{ModelServer, PublicKey, U256};
use tracing::{debug, info, warn};

/// S1's state machine for one model, by ring size. Under `--engine
/// paillier` (and for every `k = 256` model) a [`LatticeModel`] without an
/// RLWE first layer is exactly the Paillier engine.
#[derive(Clone)]
pub enum Engine {
    K128(LatticeModel<u128>),
    K256(LatticeModel<U256>),
}

/// What the lattice engine needs at S1: the parameters and S2's RLWE
/// public key (from `GetLatticeKey`).
#[derive(Clone)]
pub struct LatticeKey {
    pub ctx: Arc<LatticeContext>,
    pub pk: tandem_lattice_engine::tandem_lattice::PublicKey,
    pub fingerprint: String,
    /// S1's half of the OT setup with S2 (`SetupOt`), for the full lattice
    /// path (§4.2c); `None` if S2 would not make one.
    pub ot: Option<tandem_lattice_engine::LocalOt>,
}

/// One model as served.
pub struct Served {
    pub id: String,
    pub engine: Engine,
    pub info: ModelInfo,
    /// The public metadata clients get (with the activation key).
    pub proto: pb::ModelInfo,
}

impl Served {
    pub fn model(&self) -> &QuantizedModel {
        match &self.engine {
            Engine::K128(s) => s.model(),
            Engine::K256(s) => s.model(),
        }
    }
}

/// Every model, keyed by id, bound to one activation-server key.
pub struct Registry {
    pub models: BTreeMap<String, Arc<Served>>,
    pub key: PublicKey,
    /// S2's RLWE key, under `--engine lattice`.
    pub lattice: Option<LatticeKey>,
}

impl Registry {
    pub fn get(&self, id: &str) -> Option<&Arc<Served>> {
        self.models.get(id)
    }
    pub fn ids(&self) -> String {
        if self.models.is_empty() {
            "(none)".into()
        } else {
            self.models.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    }

    /// Builds the state machines for `key`. A model that does not fit the
    /// key's packing budget, or whose allowed modes (`allowed`, by id; label
    /// only when absent) it cannot compute, is skipped with a warning (an
    /// error with `strict`).
    pub fn build(
        quantized: &[(String, Arc<QuantizedModel>)],
        key: &PublicKey,
        strict: bool,
        max_request_bytes: usize,
        allowed: &AllowedModes,
        pool: &Arc<rayon::ThreadPool>,
        lattice: Option<&LatticeKey>,
    ) -> anyhow::Result<Registry> {
        let mut models = BTreeMap::new();
        for (id, q) in quantized {
            let modes = match allowed.for_model(id, q) {
                Ok(m) => m,
                Err(e) if strict => bail!("model {id}: {e}"),
                Err(e) => {
                    warn!(model = %id, "skipping model: {e}");
                    continue;
                }
            };
            let engine = match (q.ring_bits, lattice) {
                (128, Some(l)) => {
                    LatticeModel::<u128>::with_ot(&l.ctx, q.clone(), key.clone(), l.pk.clone(), l.ot.clone(), pool.clone())
                        .map(|m| {
                            match (m.all_layers_on_lattice(), m.first_layer_on_lattice()) {
                                (Ok(()), _) => info!(
                                    model = %id,
                                    "lattice engine: every layer runs on RLWE and OT, no Paillier between the servers (full lattice path)"
                                ),
                                (Err(all), Ok(())) => info!(
                                    model = %id,
                                    "lattice engine: the first layer's product runs on RLWE, the rest on Paillier, because {all}"
                                ),
                                (Err(_), Err(why)) => {
                                    warn!(model = %id, "lattice engine: the first layer runs on Paillier, because {why}")
                                }
                            }
                            Engine::K128(m)
                        })
                }
                (128, None) => ModelServer::<u128>::new(q.clone(), key.clone(), pool.clone())
                    .map(|m| Engine::K128(LatticeModel::paillier_only(m))),
                (_, l) => {
                    if l.is_some() {
                        warn!(model = %id, "lattice engine: the first layer runs on Paillier, because the model's ring is k = 256");
                    }
                    ModelServer::<U256>::new(q.clone(), key.clone(), pool.clone())
                        .map(|m| Engine::K256(LatticeModel::paillier_only(m)))
                }
            };
            let engine = match engine {
                Ok(e) => e,
                Err(e) if strict => bail!("model {id}: {e}"),
                Err(e) => {
                    warn!(model = %id, "skipping model: {e}");
                    continue;
                }
            };
            let mut info = ModelInfo::of(id, q);
            // The owner's policy, not the model file's head, decides what
            // clients may ask for (SECURITY.md, "Output modes").
            info.default_mode = modes[0];
            info.modes = modes;
            let proto = model_info_proto(&info, &q.float.name, key, max_request_bytes);
            models.insert(id.clone(), Arc::new(Served { id: id.clone(), engine, info, proto }));
        }
        Ok(Registry { models, key: key.clone(), lattice: lattice.cloned() })
    }
}

pub fn model_info_proto(info: &ModelInfo, name: &str, key: &PublicKey, max_request_bytes: usize) -> pb::ModelInfo {
    pb::ModelInfo {
        id: info.id.clone(),
        name: name.to_string(),
        input_shape: info.input_shape.iter().map(|&d| d as u32).collect(),
        input_min: info.input_range.0,
        input_max: info.input_range.1,
        ring_bits: info.ring_bits,
        f_in: info.f_in,
        f_act: info.f_act,
        output_len: info.output_len as u32,
        output_scale: info.output_scale,
        modes: info.modes.iter().map(|&m| tandem_grpc::mode_to_proto(m) as i32).collect(),
        default_mode: tandem_grpc::mode_to_proto(info.default_mode) as i32,
        activation_key: Some(tandem_grpc::public_key_to_proto(key)),
        max_request_bytes: max_request_bytes as u64,
        input_offset: info.input_offset,
        input_mask_bits: info.input_mask_bits,
    }
}

/// Longest model id accepted (a file stem), in bytes.
pub const MAX_MODEL_ID_LEN: usize = 128;

/// Whether `id` may name a model: 1 to [`MAX_MODEL_ID_LEN`] characters of
/// `A-Z a-z 0-9 . _ -`. Ids are logged and echoed in statuses, so nothing
/// else (no control characters, no unbounded length) may get that far.
pub fn valid_model_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_MODEL_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// INVALID_ARGUMENT for a `model_id` that cannot name any model; the
/// message gives its length, never the id itself.
pub fn check_model_id(id: &str) -> Result<(), tonic::Status> {
    if valid_model_id(id) {
        return Ok(());
    }
    Err(tonic::Status::invalid_argument(format!(
        "model_id ({} bytes) is not a model id: ids are 1 to {MAX_MODEL_ID_LEN} characters of A-Z a-z 0-9 . _ - \
         (ListModels lists them)",
        id.len()
    )))
}

/// Parses `MODE[,MODE...]` (e.g. `label,probabilities`); the first mode is
/// the default.
pub fn parse_modes(spec: &str) -> Result<Vec<OutputMode>, String> {
    let mut out: Vec<OutputMode> = Vec::new();
    for name in spec.split(',').map(str::trim) {
        let m = OutputMode::parse(name).ok_or_else(|| {
            format!("unknown output mode {name:?} in {spec:?}; accepted: label, probabilities, logits, sigmoid")
        })?;
        if out.contains(&m) {
            return Err(format!("output mode {m} is listed twice in {spec:?}"));
        }
        out.push(m);
    }
    Ok(out)
}

/// Which output modes each model's owner allows (docs/PROTOCOL.md §4.8,
/// SECURITY.md "Output modes"): from `--allow-modes ID=MODES` flags, else a
/// sidecar `FILE.modes` next to the model file, else `label` only. The first
/// mode listed is the model's default.
#[derive(Clone, Debug, Default)]
pub struct AllowedModes {
    by_id: BTreeMap<String, Vec<OutputMode>>,
}

impl AllowedModes {
    /// Parses `--allow-modes` values: `ID=MODE[,MODE...]` each.
    pub fn from_flags(specs: &[String]) -> anyhow::Result<Self> {
        let mut a = AllowedModes::default();
        for spec in specs {
            let Some((id, modes)) = spec.split_once('=') else {
                bail!("--allow-modes {spec:?}: expected MODEL-ID=MODE[,MODE...], e.g. mnist_mlp=label,probabilities");
            };
            let id = id.trim();
            if !valid_model_id(id) {
                bail!("--allow-modes {spec:?}: {id:?} is not a model id (1 to {MAX_MODEL_ID_LEN} characters of A-Z a-z 0-9 . _ -)");
            }
            let modes = parse_modes(modes).map_err(|e| anyhow::anyhow!("--allow-modes {spec:?}: {e}"))?;
            if a.by_id.insert(id.to_string(), modes).is_some() {
                bail!("--allow-modes: model {id} is configured twice");
            }
        }
        Ok(a)
    }

    /// Allows `modes` (first = default) on model `id`, replacing what was set.
    pub fn set(&mut self, id: &str, modes: Vec<OutputMode>) {
        self.by_id.insert(id.to_string(), modes);
    }

    /// Adds what `other` sets for models this does not configure (flags
    /// take precedence over sidecars).
    pub fn or(mut self, other: AllowedModes) -> Self {
        for (id, m) in other.by_id {
            self.by_id.entry(id).or_insert(m);
        }
        self
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.by_id.keys().map(String::as_str)
    }

    /// The modes clients may use on `id` (first = default), checked against
    /// what the model can compute.
    pub fn for_model(&self, id: &str, q: &QuantizedModel) -> Result<Vec<OutputMode>, String> {
        let modes = self.by_id.get(id).cloned().unwrap_or_else(|| vec![OutputMode::Label]);
        let offered = q.modes();
        if let Some(m) = modes.iter().find(|m| !offered.contains(m)) {
            return Err(format!(
                "output mode {m} is allowed but the model cannot compute it ({} outputs; possible: {})",
                q.output_len,
                names(&offered)
            ));
        }
        Ok(modes)
    }
}

/// `label, probabilities`.
pub fn names(modes: &[OutputMode]) -> String {
    modes.iter().map(|m| m.name()).collect::<Vec<_>>().join(", ")
}

/// The sidecar holding a model file's allowed modes: `FILE.modes`.
pub fn modes_sidecar(model_file: &Path) -> PathBuf {
    let mut p = model_file.as_os_str().to_owned();
    p.push(".modes");
    PathBuf::from(p)
}

fn read_modes_sidecar(model_file: &Path) -> anyhow::Result<Option<Vec<OutputMode>>> {
    let path = modes_sidecar(model_file);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            // One line of modes; `#` lines are comments.
            let spec: Vec<&str> =
                text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
            let [spec] = spec[..] else {
                bail!("{}: expected one line MODE[,MODE...], e.g. label,probabilities", path.display());
            };
            Ok(Some(parse_modes(spec).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot read {}", path.display()))),
    }
}

/// Largest `InferRequest` a client needs for these models: the masked
/// input (`d` values of `m + 1` bits packed, `⌈d(m+1)/8⌉` bytes, or `k/8`
/// bytes a value with the full-ring mask, §4.1) plus room for the encrypted seed (up to a
/// 4096-bit key), the ids and the protobuf framing. The default
/// `--max-request-bytes`, so a peer cannot make S1 buffer more than a real
/// request ever takes.
pub fn request_limit(quantized: &[(String, Arc<QuantizedModel>)]) -> usize {
    const OVERHEAD: usize = 2 * 4096 / 8 + 16 + MAX_MODEL_ID_LEN + 64;
    const FLOOR: usize = 16 << 10;
    let input = quantized
        .iter()
        .map(|(_, q)| tandem_core::InputMasking::of_model(q).encoded_len(q.input_len()).unwrap_or(usize::MAX))
        .max();
    (input.unwrap_or(0) + OVERHEAD).max(FLOOR)
}

/// Reads one model file by extension.
pub fn load_model_file(path: &Path) -> anyhow::Result<Option<Model>> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("tandem") => Ok(Some(tandem_model::format::load(path)?)),
        Some("onnx") => import_onnx(path).map(Some),
        _ => Ok(None),
    }
}

/// Imports an ONNX model. The input range (PROTOCOL §7 budgets for it)
/// comes from a sidecar file `<model>.onnx.input-range` holding `lo,hi`
/// or, failing that, from the file's `tandem.input_range` metadata; the
/// input precision likewise (`input_frac_bits = N` in the sidecar, or
/// metadata `tandem.input_frac_bits`; default 16).
///
/// Only a missing range gets the hint about the sidecar: an unsupported op
/// or a bad file is reported as the importer words it, with the file name.
fn import_onnx(path: &Path) -> anyhow::Result<Model> {
    let sidecar = tandem_onnx::read_input_sidecar(path).map_err(anyhow::Error::msg)?;
    let opts = tandem_onnx::InputSidecar::fill(sidecar, Default::default());
    tandem_onnx::import_file(path, &opts).map_err(|e| match e {
        tandem_onnx::ImportError::MissingInputRange => anyhow::anyhow!(
            "{}: the ONNX model does not declare its input range; write \"lo,hi\" (every input feature lies in \
             [lo, hi]) into {}, or add metadata {:?} = \"lo,hi\" to the model",
            path.display(),
            tandem_onnx::input_range_sidecar(path).display(),
            tandem_onnx::INPUT_RANGE_KEY,
        ),
        other => anyhow::anyhow!("{}: {other}", path.display()),
    })
}

/// Quantizes one model and checks the bit budget (PROTOCOL §7).
pub fn quantize(id: &str, model: &Model, cfg: QuantConfig) -> anyhow::Result<QuantizedModel> {
    let q = QuantizedModel::new(model, cfg).with_context(|| format!("model {id}"))?;
    Ok(q)
}

/// The load-time quantization drift check (issue 18): float model vs integer
/// reference on random inputs in the declared range. Beyond the bound it
/// warns, or refuses the model with `strict` (`--strict`).
pub fn drift_gate(id: &str, q: QuantizedModel, strict: bool) -> anyhow::Result<QuantizedModel> {
    let d = tandem_model::check_quantization_drift(&q, tandem_model::drift::default_samples(&q), 0, Default::default());
    if d.within_bound() {
        debug!(model = %id, "{d}");
    } else if strict {
        bail!("model {id}: {d}; refused (--strict)");
    } else {
        warn!(model = %id, "{d}");
    }
    Ok(q)
}

/// Models read from a directory, with the modes their sidecars allow.
#[derive(Default)]
pub struct Loaded {
    pub models: Vec<(String, Arc<QuantizedModel>)>,
    pub modes: AllowedModes,
}

/// The files `load_dir` considers: those directly in `dir`, then those in
/// each subdirectory of `dir` (not deeper), each group sorted by path.
/// Unreadable subdirectories are skipped with a warning (the directory
/// itself must be readable).
fn model_dir_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let list = |d: &Path| -> std::io::Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        v.sort();
        Ok(v)
    };
    let top = list(dir).with_context(|| format!("cannot read the models directory {}", dir.display()))?;
    let mut files: Vec<PathBuf> = top.iter().filter(|p| p.is_file()).cloned().collect();
    for sub in top.iter().filter(|p| p.is_dir()) {
        match list(sub) {
            Ok(v) => files.extend(v.into_iter().filter(|p| p.is_file())),
            Err(e) => warn!(dir = %sub.display(), "skipping an unreadable subdirectory of the models directory: {e}"),
        }
    }
    Ok(files)
}

/// Every model file in `dir` and in its subdirectories one level down
/// (sorted by name; files directly in `dir` first, so they win an id
/// clash), id = file stem, with its `FILE.modes` sidecar. Files that fail
/// to load or quantize, or have a bad sidecar, are skipped with a warning,
/// or fail with `strict`.
///
/// One level down because the repository ships its demo as
/// `models/demo/demo.tandem` beside the ONNX models in `models/`: a server
/// started with `--models models/` serving all but the demo surprised
/// every new user.
pub fn load_dir(dir: &Path, cfg: QuantConfig, strict: bool) -> anyhow::Result<Loaded> {
    let entries = model_dir_files(dir)?;
    let mut out: Vec<(String, Arc<QuantizedModel>)> = Vec::new();
    let mut origin: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut modes = AllowedModes::default();
    for path in entries {
        let id = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        let is_model = matches!(path.extension().and_then(|e| e.to_str()), Some("tandem" | "onnx"));
        if is_model && !valid_model_id(&id) {
            let msg = format!(
                "{}: the file name {id:?} is not a model id (1 to {MAX_MODEL_ID_LEN} characters of A-Z a-z 0-9 . _ -); rename it",
                path.display()
            );
            if strict {
                bail!(msg);
            }
            warn!("skipping model: {msg}");
            continue;
        }
        let quantized = |m: Model| quantize(&id, &m, cfg).and_then(|q| drift_gate(&id, q, strict));
        let loaded = load_model_file(&path).and_then(|m| m.map(quantized).transpose()).and_then(|q| {
            let Some(q) = q else { return Ok(None) };
            let allowed = read_modes_sidecar(&path)?;
            if let Some(a) = &allowed {
                let mut one = AllowedModes::default();
                one.set(&id, a.clone());
                one.for_model(&id, &q).map_err(|e| anyhow::anyhow!("{}: {e}", modes_sidecar(&path).display()))?;
            }
            Ok(Some((q, allowed)))
        });
        match loaded {
            Ok(None) => debug!(path = %path.display(), "not a model file; ignored"),
            Ok(Some((q, allowed))) => {
                if let Some(first) = origin.get(&id) {
                    let msg = format!(
                        "{} and {} have the same model id {id:?}; serving the first, rename the other",
                        first.display(),
                        path.display()
                    );
                    if strict {
                        bail!(msg);
                    }
                    warn!("{msg}");
                    continue;
                }
                log_loaded(&id, &q);
                debug!(model = %id, path = %path.display(), "model file");
                if let Some(a) = allowed {
                    modes.set(&id, a);
                }
                origin.insert(id.clone(), path.clone());
                out.push((id, Arc::new(q)));
            }
            Err(e) if strict => return Err(e.context(format!("loading {}", path.display()))),
            Err(e) => warn!(path = %path.display(), "skipping model: {e:#}"),
        }
    }
    Ok(Loaded { models: out, modes })
}

pub fn log_loaded(id: &str, q: &QuantizedModel) {
    let needed = q.budget.iter().map(|b| b.needed_bits).max().unwrap_or(0);
    info!(
        model = %id,
        input = ?q.input_shape.dims(),
        outputs = q.output_len,
        ring_bits = q.ring_bits,
        budget_bits = needed,
        "loaded model"
    );
}

/// Quantizes in-memory models (the demo and tests).
pub fn quantize_all(
    models: Vec<(String, Model)>,
    cfg: QuantConfig,
    strict: bool,
) -> anyhow::Result<Vec<(String, Arc<QuantizedModel>)>> {
    let mut out = Vec::new();
    for (id, m) in models {
        match quantize(&id, &m, cfg).and_then(|q| drift_gate(&id, q, strict)) {
            Ok(q) => {
                log_loaded(&id, &q);
                out.push((id, Arc::new(q)));
            }
            Err(e) if strict => return Err(e),
            Err(e) => warn!("skipping model: {e:#}"),
        }
    }
    Ok(out)
}

/// `OUTPUT_MODE_UNSPECIFIED` → the model's default. A mode the model
/// cannot compute is INVALID_ARGUMENT; one it can but its owner does not
/// allow is PERMISSION_DENIED; both name the allowed modes.
pub fn resolve_mode(served: &Served, v: i32) -> Result<OutputMode, tonic::Status> {
    let mode = tandem_grpc::mode_from_proto(v).or_status()?.unwrap_or(served.info.default_mode);
    if served.info.modes.contains(&mode) {
        return Ok(mode);
    }
    let allowed = names(&served.info.modes);
    if served.model().modes().contains(&mode) {
        Err(tonic::Status::permission_denied(format!(
            "output mode {mode} is not allowed on model {:?} by its owner; allowed: {allowed}",
            served.id
        )))
    } else {
        Err(tonic::Status::invalid_argument(format!(
            "output mode {mode} is not available for model {:?} ({} outputs); allowed: {allowed}",
            served.id, served.info.output_len
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use tandem_model::testing::random_mlp;
    use tandem_model::ActivationKind;

    fn mlp(seed: u64) -> Model {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        random_mlp(&mut rng, &[3, 4, 2], &[ActivationKind::Relu], 1.0, OutputMode::Label)
    }

    #[test]
    fn loads_good_models_and_skips_the_rest_with_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        tandem_model::format::save(&mlp(1), &d.join("b.tandem")).unwrap();
        tandem_model::format::save(&mlp(2), &d.join("a.tandem")).unwrap();
        // Fails the bit budget: an absurd declared input range.
        let mut wide = mlp(3);
        wide.input_range = (-1e60, 1e60);
        tandem_model::format::save(&wide, &d.join("wide.tandem")).unwrap();
        std::fs::write(d.join("junk.tandem"), b"not a model").unwrap();
        std::fs::write(d.join("m.onnx"), b"onnx").unwrap();
        std::fs::write(d.join("notes.txt"), b"ignored").unwrap();
        let cfg = QuantConfig::default();
        let loaded = load_dir(d, cfg, false).unwrap().models;
        let ids: Vec<_> = loaded.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        let err = format!("{:#}", load_dir(d, cfg, true).err().unwrap());
        assert!(err.contains("junk.tandem") || err.contains("m.onnx") || err.contains("bit budget"), "{err}");
        std::fs::remove_file(d.join("junk.tandem")).unwrap();
        std::fs::remove_file(d.join("m.onnx")).unwrap();
        let err = format!("{:#}", load_dir(d, cfg, true).err().unwrap());
        assert!(err.contains("model wide") && err.contains("does not fit the bit budget"), "{err}");
    }

    #[test]
    fn model_ids_are_short_and_plain() {
        for ok in ["mnist_mlp", "a", "v1.2-b", &"x".repeat(MAX_MODEL_ID_LEN)] {
            assert!(valid_model_id(ok), "{ok}");
        }
        let long = "x".repeat(MAX_MODEL_ID_LEN + 1);
        for bad in ["", "a b", "a\nINFO forged", "ü", "a/b", "a\"b", &long, &"y".repeat(1 << 20)] {
            assert!(!valid_model_id(bad), "{bad:?}");
            let s = check_model_id(bad).unwrap_err();
            assert_eq!(s.code(), tonic::Code::InvalidArgument);
            // The status gives the length, never the id (it could be 1 MiB of anything).
            assert!(
                s.message().len() < 200 && s.message().contains(&format!("({} bytes)", bad.len())),
                "{}",
                s.message()
            );
            if bad.len() > 1 {
                assert!(!s.message().contains(bad), "{}", s.message());
            }
        }
        // A model file whose name is no id is not served.
        let dir = tempfile::tempdir().unwrap();
        tandem_model::format::save(&mlp(1), &dir.path().join("bad name.tandem")).unwrap();
        tandem_model::format::save(&mlp(1), &dir.path().join("good.tandem")).unwrap();
        let ids: Vec<String> =
            load_dir(dir.path(), QuantConfig::default(), false).unwrap().models.into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, ["good"]);
        let err = format!("{:#}", load_dir(dir.path(), QuantConfig::default(), true).err().unwrap());
        assert!(err.contains("is not a model id"), "{err}");
    }

    #[test]
    fn allowed_modes_come_from_flags_then_sidecars_and_default_to_label() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        tandem_model::format::save(&mlp(1), &d.join("a.tandem")).unwrap();
        tandem_model::format::save(&mlp(2), &d.join("b.tandem")).unwrap();
        tandem_model::format::save(&mlp(3), &d.join("c.tandem")).unwrap();
        std::fs::write(d.join("a.tandem.modes"), "# owner: alice\nprobabilities, label\n").unwrap();
        std::fs::write(d.join("b.tandem.modes"), "label,logits\n").unwrap();
        let loaded = load_dir(d, QuantConfig::default(), true).unwrap();
        let flags = AllowedModes::from_flags(&["b=label".to_string()]).unwrap();
        let allowed = flags.or(loaded.modes);
        let key = tandem_paillier::SecretKey::generate(1024).unwrap();
        let reg =
            Registry::build(&loaded.models, key.public(), true, 1 << 20, &allowed, &tandem_paillier::thread_pool(1), None)
                .unwrap();
        let modes = |id: &str| {
            let p = &reg.get(id).unwrap().proto;
            (p.modes.clone(), p.default_mode)
        };
        use tandem_grpc::v1::OutputMode as P;
        // The sidecar's order: its first mode is the default.
        assert_eq!(modes("a"), (vec![P::Probabilities as i32, P::Label as i32], P::Probabilities as i32));
        // The flag overrides the sidecar.
        assert_eq!(modes("b"), (vec![P::Label as i32], P::Label as i32));
        // Neither: label only, whatever the model file's own default.
        assert_eq!(modes("c"), (vec![P::Label as i32], P::Label as i32));

        // A mode the model cannot compute, in a sidecar or a flag: the model is not served.
        std::fs::write(d.join("c.tandem.modes"), "label,sigmoid\n").unwrap();
        let err = format!("{:#}", load_dir(d, QuantConfig::default(), true).err().unwrap());
        assert!(
            err.contains("c.tandem.modes") && err.contains("output mode sigmoid is allowed but the model cannot"),
            "{err}"
        );
        assert_eq!(load_dir(d, QuantConfig::default(), false).unwrap().models.len(), 2);
        std::fs::write(d.join("c.tandem.modes"), "label\nlogits\n").unwrap();
        let err = format!("{:#}", load_dir(d, QuantConfig::default(), true).err().unwrap());
        assert!(err.contains("expected one line"), "{err}");
        let bad = AllowedModes::from_flags(&["a=sigmoid".to_string()]).unwrap();
        let err = Registry::build(&loaded.models, key.public(), true, 1 << 20, &bad, &tandem_paillier::thread_pool(1), None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("model a: output mode sigmoid is allowed but the model cannot compute it"), "{err}");
        for (flag, want) in [
            ("a", "expected MODEL-ID=MODE"),
            ("a=softmax", "unknown output mode \"softmax\""),
            ("a=label,label", "listed twice"),
            ("a b=label", "is not a model id"),
        ] {
            let e = AllowedModes::from_flags(&[flag.to_string()]).unwrap_err().to_string();
            assert!(e.contains(want), "{flag}: {e}");
        }
        let e = AllowedModes::from_flags(&["a=label".into(), "a=logits".into()]).unwrap_err().to_string();
        assert!(e.contains("configured twice"), "{e}");
    }

    #[test]
    fn request_limit_fits_the_largest_model() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let big = random_mlp(&mut rng, &[3000, 4, 2], &[ActivationKind::Relu], 1.0, OutputMode::Label);
        let q = quantize_all(vec![("s".into(), mlp(1)), ("big".into(), big)], QuantConfig::default(), true).unwrap();
        // [−1, 1] at f_in = 16 with 3000 features: m = 17 + 1 + 40 = 58,
        // so 59 bits a feature packed (§4.1), not k/8 = 16 bytes.
        assert_eq!(tandem_core::InputMasking::of_model(&q[1].1).value_bits(), 59);
        assert_eq!(request_limit(&q), (3000 * 59usize).div_ceil(8) + 1232);
        // Small models still get a floor, far below the old 32 MiB.
        assert_eq!(request_limit(&q[..1]), 16 << 10);
    }

    #[test]
    fn registry_builds_both_rings_and_resolves_modes() {
        let key = tandem_paillier::SecretKey::generate(1024).unwrap();
        let q = quantize_all(vec![("m".into(), mlp(4))], QuantConfig::default(), true).unwrap();
        let mut allowed = AllowedModes::default();
        allowed.set("m", vec![OutputMode::Label, OutputMode::Logits]);
        let reg = Registry::build(&q, key.public(), true, 1 << 20, &allowed, &tandem_paillier::thread_pool(1), None).unwrap();
        let served = reg.get("m").unwrap();
        assert!(matches!(served.engine, Engine::K128(_)));
        assert_eq!(served.proto.activation_key.as_ref().unwrap().fingerprint, key.public().fingerprint());
        assert_eq!(resolve_mode(served, 0).unwrap(), OutputMode::Label);
        assert_eq!(resolve_mode(served, tandem_grpc::v1::OutputMode::Logits as i32).unwrap(), OutputMode::Logits);
        let e = resolve_mode(served, tandem_grpc::v1::OutputMode::Sigmoid as i32).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message().contains("not available for model \"m\" (2 outputs); allowed: label, logits"),
            "{}",
            e.message()
        );
        // The model can compute probabilities, but its owner does not allow them.
        let e = resolve_mode(served, tandem_grpc::v1::OutputMode::Probabilities as i32).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            e.message(),
            "output mode probabilities is not allowed on model \"m\" by its owner; allowed: label, logits"
        );
        assert_eq!(reg.ids(), "m");
    }
}

#[cfg(test)]
mod onnx_tests {
    use super::*;

    /// Every bundled ONNX model loads (with its `.input-range` sidecar),
    /// quantizes and fits the bit budget.
    #[test]
    fn bundled_onnx_models_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
        let loaded = load_dir(&dir, QuantConfig::default(), true).expect("strict load of models/");
        let ids: Vec<&str> = loaded.models.iter().map(|(id, _)| id.as_str()).collect();
        for want in ["breast_cancer_mlp", "digits_mlp", "mnist_cnn", "mnist_mlp", "pima_mlp"] {
            assert!(ids.contains(&want), "{want} missing from {ids:?}");
        }
    }

    #[test]
    fn onnx_without_range_names_the_fix() {
        let tmp = std::env::temp_dir().join(format!("tandem-norange-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/pima_mlp.onnx");
        let dst = tmp.join("pima.onnx");
        std::fs::copy(src, &dst).unwrap();
        let err = format!("{:#}", import_onnx(&dst).unwrap_err());
        assert!(err.contains("pima.onnx.input-range") && err.contains("does not declare its input range"), "{err}");
        // model-server has no such flag; the importer's generic wording must not leak here.
        assert!(!err.contains("pass --input-range"), "{err}");
        std::fs::remove_dir_all(&tmp).ok();
    }

    /// An unsupported op is reported as such, not behind a hint about the
    /// input range the file already has (issue 19).
    #[test]
    fn onnx_errors_other_than_the_range_are_not_blamed_on_it() {
        let dir = tempfile::tempdir().unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/onnx/refuse_lstm.onnx");
        let dst = dir.path().join("lstm.onnx");
        std::fs::copy(src, &dst).unwrap();
        std::fs::write(dir.path().join("lstm.onnx.input-range"), "0,1\n").unwrap();
        let err = format!("{:#}", import_onnx(&dst).unwrap_err());
        assert!(err.contains("lstm.onnx") && err.contains("LSTM") && err.contains("tandem imports:"), "{err}");
        assert!(!err.contains("input range"), "{err}");
        std::fs::write(dir.path().join("lstm.onnx.input-range"), "wide\n").unwrap();
        let err = format!("{:#}", import_onnx(&dst).unwrap_err());
        assert!(err.contains("lstm.onnx.input-range") && err.contains("\"lo,hi\""), "{err}");
    }
}

#[cfg(test)]
mod dir_tests {
    use super::*;
    use rand::SeedableRng;
    use tandem_model::testing::random_mlp;
    use tandem_model::ActivationKind;

    fn save(seed: u64, path: &Path) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let m = random_mlp(&mut rng, &[3, 4, 2], &[ActivationKind::Relu], 1.0, OutputMode::Label);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        tandem_model::format::save(&m, path).unwrap();
    }

    /// `--models models/` serves `models/demo/demo.tandem` too: one level
    /// of subdirectories is searched, files directly in the directory win
    /// an id clash, and deeper files are not served.
    #[test]
    fn one_subdirectory_level_is_served_and_top_level_files_win() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        save(1, &d.join("top.tandem"));
        save(2, &d.join("demo/demo.tandem"));
        std::fs::write(d.join("demo/demo.tandem.modes"), "label,logits\n").unwrap();
        save(3, &d.join("demo/top.tandem"));
        save(4, &d.join("a/b/deep.tandem"));
        let loaded = load_dir(d, QuantConfig::default(), false).unwrap();
        let ids: Vec<&str> = loaded.models.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["top", "demo"]);
        assert_eq!(loaded.modes.ids().collect::<Vec<_>>(), ["demo"]);
        let err = format!("{:#}", load_dir(d, QuantConfig::default(), true).err().unwrap());
        assert!(err.contains("same model id \"top\"") && err.contains("demo/top.tandem"), "{err}");
    }
}
