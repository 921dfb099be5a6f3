//! The client's one Paillier encryption at 2048 bits (a 32-byte seed secret,
//! full-size `r^N`), side by side in one run:
//!
//! - `crypto-bigint-boxed`: this crate (`BoxedMontyForm`, heap limbs, any key size);
//! - `crypto-bigint-u4096`: the same arithmetic on crypto-bigint's fixed-size
//!   `MontyForm<U4096>` (stack limbs, one type per key size), for comparison;
//! - `num-bigint`: num-bigint 0.4's `BigUint::modpow` (variable-time);
//! - `gmp`: tandem-paillier's `PublicKey::encrypt` (kzen-paillier / GMP `mpz_powm`);
//! - `crypto-bigint-noise-table`: this crate's `encrypt_with_table`
//!   (short-exponent DJN noise from a prebuilt table), and
//!   `noise-table-build`, the one-off cost of that table.
//!
//! Every variant includes drawing `r` (with its gcd check) and the final
//! multiplication by `1 + m·N`. Two groups time the same four functions:
//! `encrypt_2048` in wall-clock time and `encrypt_2048_cpu` in the calling
//! thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), which other processes on a
//! busy machine disturb much less. `cargo bench -p tandem-paillier-pk`; the
//! medians are in `$CARGO_TARGET_DIR/criterion/<group>/<variant>/new/estimates.json`
//! (`jq .median.point_estimate`, in nanoseconds).

#[cfg(target_arch = "x86_64")]
criterion::criterion_main!(x86_64::wall_clock, x86_64::cpu_time);

/// GMP (tandem-paillier) is a dev-dependency on x86_64 hosts only.
#[cfg(not(target_arch = "x86_64"))]
fn main() {}

#[cfg(target_arch = "x86_64")]
mod x86_64 {
    use criterion::measurement::{Measurement, ValueFormatter};
    use criterion::{criterion_group, BenchmarkId, Criterion, SamplingMode, Throughput};
    use crypto_bigint::modular::{MontyForm, MontyParams};
    use crypto_bigint::{NonZero, Odd, U2048, U4096};
    use num_bigint::BigUint;
    use rand_chacha::rand_core::{RngCore, SeedableRng};
    use rand_chacha::ChaCha20Rng;
    use std::hint::black_box;
    use std::sync::OnceLock;
    use std::time::Duration;
    use tandem_paillier::bigint_traits::Converter;
    use tandem_paillier::{BigInt, SecretKey};

    /// `c = (1 + m·N)·r^N mod N²` on crypto-bigint's fixed-size types.
    struct FixedU4096 {
        n: U2048,
        params: MontyParams<{ U4096::LIMBS }>,
    }

    impl FixedU4096 {
        fn new(n_be: &[u8]) -> Self {
            let n = U2048::from_be_slice(n_be);
            let nn: U4096 = n.widening_mul(&n);
            let params = MontyParams::new_vartime(Odd::new(nn).unwrap());
            FixedU4096 { n, params }
        }
        fn encrypt(&self, m: &[u8; 32], rng: &mut impl RngCore) -> [u8; 512] {
            let mut mb = [0u8; 256];
            mb[224..].copy_from_slice(m);
            let m = U2048::from_be_slice(&mb);
            let gm: U4096 = m.widening_mul(&self.n);
            let gm = gm.wrapping_add(&U4096::ONE);
            let n_odd = Odd::new(self.n).unwrap();
            loop {
                let mut buf = [0u8; 256];
                rng.fill_bytes(&mut buf);
                let r = U2048::from_be_slice(&buf);
                if !(r > U2048::ONE && r < self.n) {
                    continue;
                }
                let noise = MontyForm::new(&r.resize::<{ U4096::LIMBS }>(), self.params).pow_bounded_exp(&self.n, 2048);
                let c = (MontyForm::new(&gm, self.params) * noise).retrieve();
                // The unit check on the public c, as the crate does.
                let c_mod_n: U2048 =
                    c.rem_vartime(&NonZero::new(self.n.resize::<{ U4096::LIMBS }>()).unwrap()).resize();
                if n_odd.gcd_vartime(&c_mod_n) == U2048::ONE {
                    return c.to_be_bytes();
                }
            }
        }
    }

    /// The same with num-bigint 0.4.
    struct NumBigint {
        n: BigUint,
        nn: BigUint,
    }

    impl NumBigint {
        fn encrypt(&self, m: &[u8], rng: &mut impl RngCore) -> Vec<u8> {
            let one = BigUint::from(1u8);
            let r = loop {
                let mut buf = [0u8; 256];
                rng.fill_bytes(&mut buf);
                let r = BigUint::from_bytes_be(&buf);
                if r > one && r < self.n && num_integer::Integer::gcd(&r, &self.n) == one {
                    break r;
                }
            };
            let gm = &one + BigUint::from_bytes_be(m) * &self.n;
            let c = gm * r.modpow(&self.n, &self.nn) % &self.nn;
            c.to_bytes_be()
        }
    }

    /// The calling thread's CPU time, in nanoseconds.
    struct ThreadCpuTime;

    fn thread_cpu_ns() -> u64 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    impl Measurement for ThreadCpuTime {
        type Intermediate = u64;
        type Value = u64;
        fn start(&self) -> u64 {
            thread_cpu_ns()
        }
        fn end(&self, i: u64) -> u64 {
            thread_cpu_ns() - i
        }
        fn add(&self, a: &u64, b: &u64) -> u64 {
            a + b
        }
        fn zero(&self) -> u64 {
            0
        }
        fn to_f64(&self, v: &u64) -> f64 {
            *v as f64
        }
        fn formatter(&self) -> &dyn ValueFormatter {
            &CpuFormatter
        }
    }

    /// Shows nanoseconds of CPU time as milliseconds.
    struct CpuFormatter;

    impl ValueFormatter for CpuFormatter {
        fn scale_values(&self, _typical: f64, values: &mut [f64]) -> &'static str {
            values.iter_mut().for_each(|v| *v /= 1e6);
            "ms (cpu)"
        }
        fn scale_throughputs(&self, _typical: f64, _throughput: &Throughput, values: &mut [f64]) -> &'static str {
            values.iter_mut().for_each(|v| *v /= 1e6);
            "ms (cpu)"
        }
        fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
            "ns"
        }
    }

    fn wall(c: &mut Criterion) {
        bench(c, "encrypt_2048")
    }

    fn cpu(c: &mut Criterion<ThreadCpuTime>) {
        bench(c, "encrypt_2048_cpu")
    }

    fn bench<M: Measurement>(c: &mut Criterion<M>, group: &str) {
        static KEY: OnceLock<SecretKey> = OnceLock::new();
        let sk = KEY.get_or_init(|| SecretKey::generate(2048).expect("2048 is an accepted size"));
        let gmp = sk.public();
        let n_be = gmp.to_bytes();
        let ours = tandem_paillier_pk::PublicKey::from_bytes(&n_be).unwrap();
        let fixed = FixedU4096::new(&n_be);
        let nb = NumBigint { n: BigUint::from_bytes_be(&n_be), nn: BigUint::from_bytes_be(&n_be).pow(2) };
        let secret = [0xa5u8; 32];
        let secret_gmp = BigInt::from_bytes(&secret);

        // All four compute the same function: check once before timing.
        {
            let c_ours = ours.encrypt(&secret, &mut ChaCha20Rng::seed_from_u64(7)).unwrap();
            assert_eq!(c_ours, fixed.encrypt(&secret, &mut ChaCha20Rng::seed_from_u64(7)).to_vec());
            assert_eq!(c_ours, nb.encrypt(&secret, &mut ChaCha20Rng::seed_from_u64(7)));
            let parsed = gmp.ciphertext_from_bytes(&c_ours).unwrap();
            assert_eq!(sk.decrypt_raw(&parsed), secret_gmp);
            assert_eq!(sk.decrypt_raw(&gmp.encrypt(&secret_gmp, &mut ChaCha20Rng::seed_from_u64(8))), secret_gmp);
        }

        let mut g = c.benchmark_group(group);
        g.sampling_mode(SamplingMode::Flat)
            .sample_size(50)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        g.bench_function(BenchmarkId::from_parameter("crypto-bigint-boxed"), |b| {
            b.iter(|| ours.encrypt(black_box(&secret), &mut rng).unwrap())
        });
        g.bench_function(BenchmarkId::from_parameter("crypto-bigint-u4096"), |b| {
            b.iter(|| fixed.encrypt(black_box(&secret), &mut rng))
        });
        g.bench_function(BenchmarkId::from_parameter("num-bigint"), |b| {
            b.iter(|| nb.encrypt(black_box(&secret), &mut rng))
        });
        g.bench_function(BenchmarkId::from_parameter("gmp"), |b| {
            b.iter(|| gmp.encrypt(black_box(&secret_gmp), &mut rng))
        });
        // Short-exponent noise from a table built once (not timed here;
        // `noise-table-build` times it).
        let table = tandem_paillier_pk::NoiseTable::new(&ours, &mut rng).unwrap();
        let c = ours.encrypt_with_table(&secret, &table, &mut rng).unwrap();
        assert_eq!(sk.decrypt_raw(&gmp.ciphertext_from_bytes(&c).unwrap()), secret_gmp);
        g.bench_function(BenchmarkId::from_parameter("crypto-bigint-noise-table"), |b| {
            b.iter(|| ours.encrypt_with_table(black_box(&secret), &table, &mut rng).unwrap())
        });
        g.sample_size(10);
        g.bench_function(BenchmarkId::from_parameter("noise-table-build"), |b| {
            b.iter(|| tandem_paillier_pk::NoiseTable::new(&ours, &mut rng).unwrap())
        });
        g.finish();
    }

    criterion_group!(wall_clock, wall);
    criterion_group! {
        name = cpu_time;
        config = Criterion::default().with_measurement(ThreadCpuTime);
        targets = cpu
    }
}
