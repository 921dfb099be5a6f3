use clap::Parser;

fn main() {
    let args = tandem_eval::Args::parse();
    match tandem_eval::run(&args) {
        Ok((report, table)) => {
            print!("{table}");
            if let Some(p) = &args.json {
                println!("per-sample records: {}", p.display());
            }
            // Exit non-zero if private inference disagreed with its reference.
            let s = &report.summary;
            if s.private_reference_bit_exact != s.evaluated {
                eprintln!(
                    "error: private inference differed from the integer reference on {} of {} rows",
                    s.evaluated - s.private_reference_bit_exact,
                    s.evaluated
                );
                std::process::exit(2);
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
