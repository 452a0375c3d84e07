//! Test support for copilot's own tests: a `file://`-store task for `copilot download`
//! ([`Task`]), a real S3-compatible server (moto) serving https ([`moto`]), an HTTPS
//! server with a test CA ([`https`]), an HTTP server whose body stalls
//! ([`StallingServer`]).
pub mod https;
pub mod moto;
mod stalling;
mod task;

pub use stalling::StallingServer;
pub use task::Task;
