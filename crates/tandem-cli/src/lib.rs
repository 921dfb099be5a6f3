//! The `tandem` command's building blocks: the one-command demo
//! ([`demo`]), in-process servers on loopback ([`local`]), development TLS
//! certificates ([`dev_certs`]) and the bundled demo model ([`demo_model`]).

pub mod demo;
pub mod demo_model;
pub mod dev_certs;
pub mod local;
