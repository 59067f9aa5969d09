fn main() {
    std::process::exit(dapt::cli::main());
}
