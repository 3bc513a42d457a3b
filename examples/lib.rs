//! Examples of embedding calendar-sync; see `embed.rs` (`cargo run -p calendar-sync-examples --example embed`).
