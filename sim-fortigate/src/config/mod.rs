//! The FortiOS configuration engine: pure code, no I/O.
//!
//! - [`lexer`]: CLI text → commands of tokens (quoting, escapes, positions).
//! - [`schema`]: the data-driven table/field schema per FortiOS version.
//! - [`tree`]: the configuration tree (tables → entries → fields).
//! - [`diff`]: what a write changes (equivalent notations, `cfgattr` of the change logs).
//! - [`engine`]: executes `config/edit/set/unset/append/unselect/next/end/delete/move/rename/
//!   clone/purge`, validating values and references; the single validation path.
//! - [`defaults`]: the factory configuration of a FortiGate-VM per version.
//! - [`show`]: serialization (`show`, `show full-configuration`).
//! - [`json`]: REST JSON forms of entries, both ways.
//! - [`noop`]: the fast path of a REST write that changes nothing (no engine run).
//! - [`store`]: [`ConfigStore`], the running configuration with revision and change events,
//!   and the generic operations (apply CLI, get/create/update/delete/move by path).

pub mod defaults;
pub mod diff;
pub mod engine;
pub mod json;
pub mod lexer;
pub mod noop;
pub mod schema;
pub mod show;
pub mod store;
pub mod tree;
pub mod version;

pub use engine::{Change, ChangeAction, ConfigError, Warning};
pub use json::JsonOpts;
pub use schema::Schema;
pub use store::{
    factory, parse_config, Applied, ChangeEvent, ConfigStore, OpError, Origin, Policy, Written,
};
pub use tree::{Config, Entry, Table, Value};
pub use version::FosVersion;

/// The seed article's two CLI snippets verbatim (reference: seed/ioc-automation-stitch-kb.txt,
/// the policy's `config` block left open as the article prints it), preceded by the address
/// object they need. One copy for the unit tests, the benchmarks and the end-to-end tests.
pub const ARTICLE_SNIPPETS: &str = include_str!("article-snippets.conf");

#[cfg(test)]
pub(crate) mod tests;
