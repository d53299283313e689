//! The versioned `summary.json` schema, the one document every other file of the bundle is
//! rendered from. Its types live in lab-report (`lab_report::summary`, with the other contracts
//! between the tools and a committed JSON Schema); this module is how the rest of evidence-pack
//! sees them.
//!
//! Any change that removes or renames a field bumps [`SCHEMA_VERSION`]; readers refuse other
//! versions instead of guessing.

pub use lab_report::summary::*;
