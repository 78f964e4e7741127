//! placeholder

pub mod cli {
    pub fn main() -> std::process::ExitCode {
        std::process::ExitCode::from(1)
    }
}
