fn main() {
    println!("spark-uplinkd: not built yet");
}
