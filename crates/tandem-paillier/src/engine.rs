//! [`PaillierEngine`]: the Paillier preprocessing behind the core's
//! `PreprocessingEngine` trait.

use crate::activation_server::{open_secret, open_session, ActivationKeys, ActivationPreprocessing};
use crate::messages::*;
use crate::model_server::{ModelServer, Preprocessing};
use rand_core::{CryptoRng, RngCore};
use std::sync::Arc;
use tandem_core::engine::{PreprocessingEngine, S1Step, S2Start, S2Step};
use tandem_core::online::OnlineModel;
use tandem_core::{DecryptedSecret, EncryptedSeed, Result, Ring, Seed, SeedSource, SessionStart};
use tandem_model::{OutputMode, QuantizedModel};

/// The Paillier engine. Its per-model S1 state is a [`ModelServer`], its S2
/// state [`ActivationKeys`]; both carry the rayon pool they were built with.
#[derive(Clone, Copy, Debug, Default)]
pub struct PaillierEngine;

impl PreprocessingEngine for PaillierEngine {
    const NAME: &'static str = "paillier";
    type S1Model<R: Ring> = ModelServer<R>;
    type S2Keys = ActivationKeys;
    type ToS2 = PreprocessingStep;
    type ToS1 = PreprocessingReply;
    type S1Prep<R: Ring> = Preprocessing<R>;
    type S2Prep<R: Ring> = ActivationPreprocessing<R>;

    fn s1_model<R: Ring>(&self, keys: &ActivationKeys, model: Arc<QuantizedModel>) -> Result<ModelServer<R>> {
        ModelServer::new(model, keys.public_key().clone(), keys.pool().clone())
    }

    fn seed_key(&self, keys: &ActivationKeys) -> tandem_core::paillier_pk::PublicKey {
        keys.public_key().to_pure()
    }

    fn online_model<R: Ring>(&self, model: &ModelServer<R>) -> Arc<OnlineModel<R>> {
        model.online_model().clone()
    }

    fn s1_start<R: Ring, G: RngCore + CryptoRng + ?Sized>(
        &self,
        model: &ModelServer<R>,
        mode: OutputMode,
        seed: &SeedSource,
        rng: &mut G,
    ) -> Result<(Preprocessing<R>, SessionStart)> {
        model.start_preprocessing(mode, seed, rng)
    }

    fn s1_step<R: Ring>(
        &self,
        prep: &mut Preprocessing<R>,
        msg: PreprocessingReply,
    ) -> Result<S1Step<PreprocessingStep, R>> {
        Ok(match msg {
            PreprocessingReply::InputMasks(m) => S1Step::Send(prep.on_input_masks(m)?),
            PreprocessingReply::Rho(m) => S1Step::Send(prep.on_rho_masks(m)?),
            PreprocessingReply::Ready(m) => S1Step::Ready(prep.take_ready(m)?),
        })
    }

    fn s2_decrypt_secret(&self, keys: &ActivationKeys, enc: &EncryptedSeed) -> Result<DecryptedSecret> {
        // The core checked ring, size and epoch before calling.
        open_secret(keys, enc)
    }

    fn s2_start<R: Ring, G: RngCore + CryptoRng + ?Sized>(
        &self,
        keys: &Arc<ActivationKeys>,
        msg: &SessionStart,
        seed: Seed,
        rng: &mut G,
    ) -> Result<S2Start<Self, R>> {
        let (prep, masks) = open_session::<R, G>(keys.clone(), msg, seed, rng);
        Ok((prep, PreprocessingReply::InputMasks(masks)))
    }

    fn s2_step<R: Ring>(
        &self,
        prep: &mut ActivationPreprocessing<R>,
        msg: PreprocessingStep,
    ) -> Result<S2Step<PreprocessingReply, R>> {
        Ok(match msg {
            PreprocessingStep::Round(r) => S2Step::Send(PreprocessingReply::Rho(prep.on_blinded_round(&r)?)),
            PreprocessingStep::Output(o) => {
                let (ready, session) = prep.on_blinded_output(&o)?;
                S2Step::Ready(PreprocessingReply::Ready(ready), Box::new(session))
            }
        })
    }
}
