//! CPU time (not wall time) per step of the 784×128 and 128×128 layers at
//! production parameters, from `/proc/self/stat` (Linux): robust on a
//! shared, loaded machine where criterion's wall-clock medians are inflated
//! by preemption. `cargo run --release -p tandem-lattice --example cpu_time`

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use tandem_lattice::*;

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("Linux /proc");
    // fields after the ")" of the command name: state is field 3; utime 14, stime 15
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0 // USER_HZ
}

fn per_op(iters: usize, mut f: impl FnMut()) -> f64 {
    f();
    let t0 = cpu_seconds();
    for _ in 0..iters {
        f();
    }
    (cpu_seconds() - t0) / iters as f64 * 1e3
}

fn main() {
    let ctx = Context::new(Params::production()).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let sk = SecretKey::generate(&ctx, &mut rng);
    let pk = sk.public_key(&mut rng);
    for (n_out, n_in, iters) in [(128usize, 784usize, 300usize), (128, 128, 600)] {
        let w: Vec<i64> = (0..n_out * n_in).map(|_| rng.gen_range(-2047..=2047)).collect();
        let r: Vec<u128> = (0..n_in).map(|_| rng.gen()).collect();
        let mu: Vec<u128> = (0..n_out).map(|_| rng.gen()).collect();
        let layout = Layout::new(&ctx, n_in, n_out).unwrap();
        let wts = EncodedWeights::new(&ctx, &w, n_out, n_in).unwrap();
        let cts = encrypt_vector(&sk, &layout, &r, &mut rng).unwrap();
        let out = linear_layer(&pk, &wts, &cts, &mu, &mut rng).unwrap();
        assert_eq!(decrypt_outputs(&sk, &layout, &out).unwrap(), reference_product(&w, n_out, n_in, &r, &mu));
        let enc = per_op(iters, || {
            encrypt_vector(&sk, &layout, &r, &mut rng).unwrap();
        });
        let prod = per_op(iters, || {
            linear_layer(&pk, &wts, &cts, &mu, &mut rng).unwrap();
        });
        let dec = per_op(iters, || {
            decrypt_outputs(&sk, &layout, &out).unwrap();
        });
        println!(
            "{n_out}x{n_in}: CPU ms per op: S2 encrypt {enc:.2}, S1 product {prod:.2}, S2 decrypt {dec:.2}, total {:.2}",
            enc + prod + dec
        );
    }
}
