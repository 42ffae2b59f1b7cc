fn main() {
    println!("midge");
}
