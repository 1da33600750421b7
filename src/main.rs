fn main() -> std::process::ExitCode {
    drover_nodes::main()
}
