//! `spark-ingest` binary: not wired yet (the library and its in-process server are usable).
fn main() {
    eprintln!("spark-ingest: the binary is being wired up; use the library for now");
}
