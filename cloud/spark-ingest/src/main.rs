fn main() {
    println!("spark-ingest: not built yet");
}
