//! wormdb-loadgen: being built (see its issue).
fn main() {}
