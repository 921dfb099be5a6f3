//! Loading, quantizing and checking the models S1 serves.

use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use tandem_crypto::{PublicKey, U256};
use tandem_model::{Model, OutputMode, QuantConfig, QuantizedModel};
use tandem_proto::v1 as pb;
use tandem_protocol::{ModelInfo, ModelServer};
use tracing::{debug, info, warn};

/// S1's state machine for one model, by ring size.
#[derive(Clone)]
pub enum Engine {
    K128(ModelServer<u128>),
    K256(ModelServer<U256>),
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
    /// key's packing budget is skipped with a warning (an error with `strict`).
    pub fn build(
        quantized: &[(String, Arc<QuantizedModel>)],
        key: &PublicKey,
        strict: bool,
        max_request_bytes: usize,
    ) -> anyhow::Result<Registry> {
        let mut models = BTreeMap::new();
        for (id, q) in quantized {
            let engine = match q.ring_bits {
                128 => ModelServer::<u128>::new(q.clone(), key.clone()).map(Engine::K128),
                _ => ModelServer::<U256>::new(q.clone(), key.clone()).map(Engine::K256),
            };
            let engine = match engine {
                Ok(e) => e,
                Err(e) if strict => bail!("model {id}: {e}"),
                Err(e) => {
                    warn!(model = %id, "skipping model: {e}");
                    continue;
                }
            };
            let info = ModelInfo::of(id, q);
            let proto = model_info_proto(&info, &q.float.name, key, max_request_bytes);
            models.insert(id.clone(), Arc::new(Served { id: id.clone(), engine, info, proto }));
        }
        Ok(Registry { models, key: key.clone() })
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
        modes: info.modes.iter().map(|&m| tandem_proto::mode_to_proto(m) as i32).collect(),
        default_mode: tandem_proto::mode_to_proto(info.default_mode) as i32,
        activation_key: Some(tandem_proto::public_key_to_proto(key)),
        max_request_bytes: max_request_bytes as u64,
    }
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
/// comes from the file's `tandem.input_range` metadata or, failing that,
/// from a sidecar file `<model>.onnx.input-range` holding `lo,hi`.
fn import_onnx(path: &Path) -> anyhow::Result<Model> {
    let sidecar = {
        let mut p = path.as_os_str().to_owned();
        p.push(".input-range");
        std::path::PathBuf::from(p)
    };
    let mut opts = tandem_onnx::ImportOptions::default();
    if let Ok(text) = std::fs::read_to_string(&sidecar) {
        let range = tandem_onnx::parse_range(text.trim()).map_err(|e| anyhow::anyhow!("{}: {e}", sidecar.display()))?;
        opts.input_range = Some(range);
    }
    tandem_onnx::import_file(path, &opts).with_context(|| {
        format!(
            "{} (an ONNX model needs an input range: metadata {:?} = \"lo,hi\" or a file {})",
            path.display(),
            tandem_onnx::INPUT_RANGE_KEY,
            sidecar.display()
        )
    })
}

/// Quantizes one model and checks the bit budget (PROTOCOL §7).
pub fn quantize(id: &str, model: &Model, cfg: QuantConfig) -> anyhow::Result<QuantizedModel> {
    let q = QuantizedModel::new(model, cfg).with_context(|| format!("model {id}"))?;
    Ok(q)
}

/// Every model file in `dir` (sorted by name), id = file stem. Files that
/// fail to load or quantize are skipped with a warning, or fail with `strict`.
pub fn load_dir(dir: &Path, cfg: QuantConfig, strict: bool) -> anyhow::Result<Vec<(String, Arc<QuantizedModel>)>> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the models directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    let mut out: Vec<(String, Arc<QuantizedModel>)> = Vec::new();
    for path in entries {
        let id = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        let loaded = load_model_file(&path).and_then(|m| m.map(|m| quantize(&id, &m, cfg)).transpose());
        match loaded {
            Ok(None) => debug!(path = %path.display(), "not a model file; ignored"),
            Ok(Some(q)) => {
                if out.iter().any(|(other, _)| *other == id) {
                    let msg = format!("two model files have the id {id:?}; keeping the first");
                    if strict {
                        bail!(msg);
                    }
                    warn!("{msg}");
                    continue;
                }
                log_loaded(&id, &q);
                out.push((id, Arc::new(q)));
            }
            Err(e) if strict => return Err(e.context(format!("loading {}", path.display()))),
            Err(e) => warn!(path = %path.display(), "skipping model: {e:#}"),
        }
    }
    Ok(out)
}

pub fn log_loaded(id: &str, q: &QuantizedModel) {
    let needed = q.budget.iter().map(|b| b.needed_bits).max().unwrap_or(0);
    info!(
        model = %id,
        input = ?q.input_shape.dims(),
        outputs = q.output_len,
        ring_bits = q.ring_bits,
        budget_bits = needed,
        default_mode = %q.default_mode,
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
        match quantize(&id, &m, cfg) {
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

/// `OUTPUT_MODE_UNSPECIFIED` → the model's default.
pub fn resolve_mode(served: &Served, v: i32) -> Result<OutputMode, tonic::Status> {
    let mode = tandem_proto::mode_from_proto(v)?.unwrap_or(served.info.default_mode);
    served.info.check_mode(mode).map_err(|e| tandem_proto::status_from_protocol(&e))?;
    Ok(mode)
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
        let loaded = load_dir(d, cfg, false).unwrap();
        let ids: Vec<_> = loaded.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        let err = format!("{:#}", load_dir(d, cfg, true).unwrap_err());
        assert!(err.contains("junk.tandem") || err.contains("m.onnx") || err.contains("bit budget"), "{err}");
        std::fs::remove_file(d.join("junk.tandem")).unwrap();
        std::fs::remove_file(d.join("m.onnx")).unwrap();
        let err = format!("{:#}", load_dir(d, cfg, true).unwrap_err());
        assert!(err.contains("model wide") && err.contains("does not fit the bit budget"), "{err}");
    }

    #[test]
    fn registry_builds_both_rings_and_resolves_modes() {
        let key = tandem_crypto::SecretKey::generate(1024).unwrap();
        let q = quantize_all(vec![("m".into(), mlp(4))], QuantConfig::default(), true).unwrap();
        let reg = Registry::build(&q, key.public(), true, 1 << 20).unwrap();
        let served = reg.get("m").unwrap();
        assert!(matches!(served.engine, Engine::K128(_)));
        assert_eq!(served.proto.activation_key.as_ref().unwrap().fingerprint, key.public().fingerprint());
        assert_eq!(resolve_mode(served, 0).unwrap(), OutputMode::Label);
        assert_eq!(resolve_mode(served, tandem_proto::v1::OutputMode::Logits as i32).unwrap(), OutputMode::Logits);
        let e = resolve_mode(served, tandem_proto::v1::OutputMode::Sigmoid as i32).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
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
        let models = load_dir(&dir, QuantConfig::default(), true).expect("strict load of models/");
        let ids: Vec<&str> = models.iter().map(|(id, _)| id.as_str()).collect();
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
        assert!(err.contains("pima.onnx.input-range"), "{err}");
        std::fs::remove_dir_all(&tmp).ok();
    }
}
