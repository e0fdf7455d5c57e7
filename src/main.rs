//! The `annals` command-line tool.

fn main() {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("--version" | "-V") => println!("annals {}", env!("CARGO_PKG_VERSION")),
        None | Some("--help" | "-h" | "help") => print_help(),
        Some(other) => {
            eprintln!("annals: unknown command {other:?}\n");
            print_help();
            std::process::exit(2);
        }
    }
}

fn print_help() {
    println!(
        "annals {} — an embedded event store\n\n\
         USAGE:\n    annals [--help | --version]",
        env!("CARGO_PKG_VERSION")
    );
}
