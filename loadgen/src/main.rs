//! wormdb-loadgen: being built (see its issue).

// Nothing calls the plot module yet: the main.rs that does is being written in
// another branch. Drop this allow when it lands.
#[allow(dead_code)]
mod plot;

fn main() {}
