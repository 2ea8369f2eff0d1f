fn main() {
    println!("spark-meterd: not built yet");
}
