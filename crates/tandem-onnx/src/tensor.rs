//! Constant tensors (initializers, `Constant` nodes, shape arithmetic) and
//! the few operations the importer folds on them.

use crate::proto::TensorProto;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Data {
    F(Vec<f64>),
    I(Vec<i64>),
}

/// A constant tensor. Floats are held as f64 (exact for f32 sources).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Const {
    pub dims: Vec<usize>,
    pub data: Data,
}

// ONNX TensorProto.DataType values the importer reads.
pub(crate) const DT_FLOAT: i32 = 1;
pub(crate) const DT_UINT8: i32 = 2;
pub(crate) const DT_INT8: i32 = 3;
pub(crate) const DT_INT32: i32 = 6;
pub(crate) const DT_INT64: i32 = 7;
pub(crate) const DT_BOOL: i32 = 9;
pub(crate) const DT_DOUBLE: i32 = 11;

pub(crate) fn dtype_name(t: i32) -> &'static str {
    match t {
        0 => "UNDEFINED",
        1 => "FLOAT",
        2 => "UINT8",
        3 => "INT8",
        4 => "UINT16",
        5 => "INT16",
        6 => "INT32",
        7 => "INT64",
        8 => "STRING",
        9 => "BOOL",
        10 => "FLOAT16",
        11 => "DOUBLE",
        12 => "UINT32",
        13 => "UINT64",
        14 => "COMPLEX64",
        15 => "COMPLEX128",
        16 => "BFLOAT16",
        _ => "an 8-bit float or other exotic type",
    }
}

/// Largest constant the importer holds: the largest dense layer a model
/// may have (`tandem_model::ir::MAX_MACS` weights).
pub(crate) const MAX_CONST_VALUES: usize = tandem_model::ir::MAX_MACS;
/// Highest tensor rank accepted (ONNX models use 6 at most): every
/// per-element index computation loops over the rank.
pub(crate) const MAX_RANK: usize = 16;

/// Element count; saturates rather than wrapping on hostile dimensions, so
/// a comparison or a limit check against it cannot be fooled.
pub(crate) fn numel(dims: &[usize]) -> usize {
    dims.iter().fold(1usize, |a, &d| a.saturating_mul(d))
}

/// Checks `dims` before anything is allocated for them: rank at most
/// [`MAX_RANK`], and the product of the dimensions, with zeros counted as
/// ones, at most `limit`. Counting zeros as ones matters: an empty tensor
/// of shape `[0, 2^60]` holds nothing, but anything that iterates over its
/// other axes (gather, concat, a weight matrix's bias) would not finish.
pub(crate) fn check_dims(dims: &[usize], limit: usize, what: &str) -> Result<usize, String> {
    if dims.len() > MAX_RANK {
        return Err(format!("{what} has rank {}; tandem accepts tensors of rank at most {MAX_RANK}", dims.len()));
    }
    let extent = dims.iter().fold(1usize, |a, &d| a.saturating_mul(d.max(1)));
    if extent > limit {
        return Err(format!(
            "{what} has dimensions {dims:?}, more than the {limit} values tandem holds in one constant"
        ));
    }
    Ok(numel(dims))
}

impl Const {
    pub fn floats(v: Vec<f64>, dims: Vec<usize>) -> Const {
        Const { dims, data: Data::F(v) }
    }
    pub fn ints(v: Vec<i64>, dims: Vec<usize>) -> Const {
        Const { dims, data: Data::I(v) }
    }
    pub fn len(&self) -> usize {
        match &self.data {
            Data::F(v) => v.len(),
            Data::I(v) => v.len(),
        }
    }
    /// Value `i` as f64, without copying the tensor.
    fn f(&self, i: usize) -> f64 {
        match &self.data {
            Data::F(v) => v[i],
            Data::I(v) => v[i] as f64,
        }
    }
    pub fn as_f64(&self) -> Vec<f64> {
        match &self.data {
            Data::F(v) => v.clone(),
            Data::I(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }
    pub fn as_i64(&self) -> Option<Vec<i64>> {
        match &self.data {
            Data::I(v) => Some(v.clone()),
            Data::F(v) => v.iter().map(|&x| (x.fract() == 0.0 && x.abs() < 9e15).then_some(x as i64)).collect(),
        }
    }
    pub fn is_float(&self) -> bool {
        matches!(self.data, Data::F(_))
    }

    /// Decodes an ONNX tensor; `what` names it in errors.
    pub fn from_proto(t: &TensorProto, what: &str) -> Result<Const, String> {
        if t.data_location == Some(1) {
            return Err(format!(
                "{what} keeps its data in an external file; tandem reads self-contained models only \
                 (re-save with onnx.save_model(m, path, save_as_external_data=False))"
            ));
        }
        if t.dims.len() > MAX_RANK {
            return Err(format!("{what} has rank {}; tandem accepts tensors of rank at most {MAX_RANK}", t.dims.len()));
        }
        let mut dims = Vec::with_capacity(t.dims.len());
        for &d in &t.dims {
            if d < 0 {
                return Err(format!("{what} has a negative dimension {d}"));
            }
            dims.push(usize::try_from(d).unwrap_or(usize::MAX));
        }
        let n = check_dims(&dims, MAX_CONST_VALUES, what)?;
        let dt = t.data_type.unwrap_or(0);
        let raw = t.raw_data.as_deref().filter(|r| !r.is_empty());
        let width = match dt {
            DT_FLOAT | DT_INT32 => 4,
            DT_DOUBLE | DT_INT64 => 8,
            DT_INT8 | DT_UINT8 | DT_BOOL => 1,
            other => {
                return Err(format!(
                    "{what} has data type {} ({other}); tandem reads FLOAT, DOUBLE, INT64, INT32, INT8, UINT8 and BOOL tensors",
                    dtype_name(other)
                ))
            }
        };
        if let Some(raw) = raw {
            if raw.len() != n * width {
                return Err(format!(
                    "{what}: raw_data holds {} bytes but dimensions {dims:?} of {} need {}",
                    raw.len(),
                    dtype_name(dt),
                    n * width
                ));
            }
        }
        let data = match (dt, raw) {
            (DT_FLOAT, Some(r)) => {
                Data::F(r.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect())
            }
            (DT_FLOAT, None) => Data::F(t.float_data.iter().map(|&x| x as f64).collect()),
            (DT_DOUBLE, Some(r)) => {
                Data::F(r.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect())
            }
            (DT_DOUBLE, None) => Data::F(t.double_data.clone()),
            (DT_INT64, Some(r)) => {
                Data::I(r.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect())
            }
            (DT_INT64, None) => Data::I(t.int64_data.clone()),
            (DT_INT32, Some(r)) => {
                Data::I(r.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64).collect())
            }
            (DT_INT8, Some(r)) => Data::I(r.iter().map(|&b| b as i8 as i64).collect()),
            (DT_UINT8 | DT_BOOL, Some(r)) => Data::I(r.iter().map(|&b| b as i64).collect()),
            (_, None) => Data::I(t.int32_data.iter().map(|&x| x as i64).collect()),
            _ => unreachable!("widths above cover every accepted type"),
        };
        let c = Const { dims, data };
        if c.len() != n {
            return Err(format!("{what} holds {} values but its dimensions {:?} need {n}", c.len(), c.dims));
        }
        Ok(c)
    }

    /// The values of `self` broadcast (numpy rules) to exactly `target`;
    /// the caller bounds `target`.
    pub fn expand_to(&self, target: &[usize]) -> Option<Vec<f64>> {
        if target.len() > MAX_RANK || broadcast_dims(&self.dims, target)? != target {
            return None;
        }
        let strides = broadcast_strides(&self.dims, target);
        Some((0..numel(target)).map(|i| self.f(source_index(i, target, &strides))).collect())
    }

    pub fn cast(&self, to: i32) -> Result<Const, String> {
        Ok(match to {
            DT_FLOAT => Const::floats(self.as_f64().iter().map(|&x| x as f32 as f64).collect(), self.dims.clone()),
            DT_DOUBLE => Const::floats(self.as_f64(), self.dims.clone()),
            DT_INT64 | DT_INT32 | DT_INT8 | DT_UINT8 => {
                Const::ints(self.as_f64().iter().map(|&x| x.trunc() as i64).collect(), self.dims.clone())
            }
            DT_BOOL => Const::ints(self.as_f64().iter().map(|&x| (x != 0.0) as i64).collect(), self.dims.clone()),
            other => return Err(format!("cast to {} is not supported", dtype_name(other))),
        })
    }

    pub fn reshape(&self, dims: Vec<usize>) -> Const {
        Const { dims, data: self.data.clone() }
    }

    /// Elementwise binary op with numpy broadcasting; the result may hold
    /// at most `limit` values.
    pub fn binary(&self, other: &Const, op: char, limit: usize) -> Result<Const, String> {
        let dims = broadcast_dims(&self.dims, &other.dims)
            .ok_or_else(|| format!("shapes {:?} and {:?} do not broadcast", self.dims, other.dims))?;
        check_dims(&dims, limit, "the broadcast result")?;
        let sa = broadcast_strides(&self.dims, &dims);
        let sb = broadcast_strides(&other.dims, &dims);
        let n = numel(&dims);
        if let (Data::I(a), Data::I(b)) = (&self.data, &other.data) {
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                let (x, y) = (a[source_index(i, &dims, &sa)], b[source_index(i, &dims, &sb)]);
                out.push(match op {
                    '+' => x.wrapping_add(y),
                    '-' => x.wrapping_sub(y),
                    '*' => x.wrapping_mul(y),
                    _ => {
                        if y == 0 {
                            return Err("integer division by zero".into());
                        }
                        x / y
                    }
                });
            }
            return Ok(Const::ints(out, dims));
        }
        let out = (0..n)
            .map(|i| {
                let (x, y) = (self.f(source_index(i, &dims, &sa)), other.f(source_index(i, &dims, &sb)));
                match op {
                    '+' => x + y,
                    '-' => x - y,
                    '*' => x * y,
                    _ => x / y,
                }
            })
            .collect();
        Ok(Const::floats(out, dims))
    }

    pub fn map_f(&self, f: impl Fn(f64) -> f64) -> Const {
        Const::floats(self.as_f64().into_iter().map(f).collect(), self.dims.clone())
    }

    pub fn transpose(&self, perm: &[usize]) -> Result<Const, String> {
        let r = self.dims.len();
        let mut seen = vec![false; r];
        if perm.len() != r || perm.iter().any(|&p| p >= r || std::mem::replace(&mut seen[p], true)) {
            return Err(format!("perm {perm:?} is not a permutation of {r} axes"));
        }
        let dims: Vec<usize> = perm.iter().map(|&p| self.dims[p]).collect();
        let in_strides = strides(&self.dims);
        let idx: Vec<usize> = (0..numel(&dims))
            .map(|i| {
                let mut rem = i;
                let mut src = 0;
                for (k, &d) in dims.iter().enumerate().rev() {
                    src += (rem % d) * in_strides[perm[k]];
                    rem /= d;
                }
                src
            })
            .collect();
        Ok(self.gather_flat(&idx, dims))
    }

    fn gather_flat(&self, idx: &[usize], dims: Vec<usize>) -> Const {
        match &self.data {
            Data::F(v) => Const::floats(idx.iter().map(|&i| v[i]).collect(), dims),
            Data::I(v) => Const::ints(idx.iter().map(|&i| v[i]).collect(), dims),
        }
    }

    /// ONNX Gather along `axis`; the result may hold at most `limit` values.
    pub fn gather(&self, indices: &Const, axis: usize, limit: usize) -> Result<Const, String> {
        let r = self.dims.len();
        if axis >= r {
            return Err(format!("axis {axis} out of range for rank {r}"));
        }
        let mut dims = self.dims[..axis].to_vec();
        dims.extend_from_slice(&indices.dims);
        dims.extend_from_slice(&self.dims[axis + 1..]);
        check_dims(&dims, limit, "the gathered result")?;
        let ind = indices.as_i64().ok_or("indices are not integers")?;
        let n_axis = self.dims[axis] as i64;
        let ind: Vec<usize> = ind
            .iter()
            .map(|&i| {
                let j = if i < 0 { i + n_axis } else { i };
                if (0..n_axis).contains(&j) {
                    Ok(j as usize)
                } else {
                    Err(format!("index {i} out of range for a dimension of {n_axis}"))
                }
            })
            .collect::<Result<_, _>>()?;
        let outer = numel(&self.dims[..axis]);
        let inner = numel(&self.dims[axis + 1..]);
        let mut idx = Vec::new();
        for o in 0..outer {
            for &k in &ind {
                for i in 0..inner {
                    idx.push((o * self.dims[axis] + k) * inner + i);
                }
            }
        }
        Ok(self.gather_flat(&idx, dims))
    }

    /// ONNX Concat of constants along `axis`; the result may hold at most
    /// `limit` values.
    pub fn concat(parts: &[Const], axis: usize, limit: usize) -> Result<Const, String> {
        let first = parts.first().ok_or("no inputs")?;
        let r = first.dims.len();
        if axis >= r {
            return Err(format!("axis {axis} out of range for rank {r}"));
        }
        for p in parts {
            if p.dims.len() != r || p.dims.iter().enumerate().any(|(k, &d)| k != axis && d != first.dims[k]) {
                return Err(format!("shapes {:?} and {:?} do not concatenate on axis {axis}", first.dims, p.dims));
            }
        }
        let mut dims = first.dims.clone();
        dims[axis] = parts.iter().fold(0usize, |a, p| a.saturating_add(p.dims[axis]));
        check_dims(&dims, limit, "the concatenation")?;
        let outer = numel(&first.dims[..axis]);
        let inner = numel(&first.dims[axis + 1..]);
        let float = parts.iter().any(|p| p.is_float());
        let (mut fo, mut io) = (Vec::new(), Vec::new());
        for o in 0..outer {
            for p in parts {
                let chunk = p.dims[axis] * inner;
                for i in o * chunk..(o + 1) * chunk {
                    match &p.data {
                        _ if float => fo.push(p.f(i)),
                        Data::I(v) => io.push(v[i]),
                        Data::F(_) => unreachable!("float parts make a float result"),
                    }
                }
            }
        }
        Ok(if float { Const::floats(fo, dims) } else { Const::ints(io, dims) })
    }
}

fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for k in (0..dims.len().saturating_sub(1)).rev() {
        s[k] = s[k + 1] * dims[k + 1];
    }
    s
}

/// numpy broadcast of two shapes.
pub(crate) fn broadcast_dims(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for k in 0..r {
        let da = if k + a.len() >= r { a[k + a.len() - r] } else { 1 };
        let db = if k + b.len() >= r { b[k + b.len() - r] } else { 1 };
        out[k] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// Strides of `src` (right-aligned into `target`), 0 on broadcast axes.
fn broadcast_strides(src: &[usize], target: &[usize]) -> Vec<usize> {
    let s = strides(src);
    let off = target.len() - src.len();
    (0..target.len()).map(|k| if k < off || src[k - off] == 1 { 0 } else { s[k - off] }).collect()
}

fn source_index(mut i: usize, target: &[usize], bstrides: &[usize]) -> usize {
    let mut src = 0;
    for k in (0..target.len()).rev() {
        src += (i % target[k]) * bstrides[k];
        i /= target[k];
    }
    src
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_and_transpose() {
        let c = Const::floats(vec![1.0, 2.0, 3.0], vec![3]);
        assert_eq!(c.expand_to(&[2, 3]).unwrap(), vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
        let col = Const::floats(vec![1.0, 2.0], vec![2, 1]);
        assert_eq!(col.expand_to(&[2, 3]).unwrap(), vec![1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
        assert!(Const::floats(vec![0.0; 4], vec![4]).expand_to(&[2, 3]).is_none());
        let m = Const::floats((0..6).map(|x| x as f64).collect(), vec![2, 3]);
        let t = m.transpose(&[1, 0]).unwrap();
        assert_eq!(t.dims, vec![3, 2]);
        assert_eq!(t.as_f64(), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        let g = m.gather(&Const::ints(vec![1], vec![]), 1, 100).unwrap();
        assert_eq!((g.dims.clone(), g.as_f64()), (vec![2], vec![1.0, 4.0]));
        let cat = Const::concat(&[Const::ints(vec![1], vec![1]), Const::ints(vec![-1], vec![1])], 0, 100).unwrap();
        assert_eq!(cat.as_i64().unwrap(), vec![1, -1]);
    }

    /// Regression (found by tests/hostile_formats.rs): shapes are checked
    /// before anything is allocated for them, and zero-size axes do not
    /// hide a huge extent.
    #[test]
    fn hostile_shapes_are_refused_before_allocation() {
        assert_eq!(numel(&[usize::MAX, 2]), usize::MAX);
        assert_eq!(numel(&[usize::MAX, 2, 0]), 0);
        assert!(check_dims(&[0, 1 << 40], MAX_CONST_VALUES, "t").unwrap_err().contains("more than"));
        assert!(check_dims(&[1; MAX_RANK + 1], MAX_CONST_VALUES, "t").unwrap_err().contains("rank 17"));
        assert_eq!(check_dims(&[0, 5], 100, "t"), Ok(0));
        let empty = Const::floats(vec![], vec![1 << 20, 0]);
        let idx = Const::ints(vec![], vec![0]);
        assert!(empty.gather(&idx, 1, 1 << 10).is_err(), "an empty gather over 2^20 rows");
        let row = Const::floats(vec![1.0; 4096], vec![1, 4096]);
        let col = Const::floats(vec![1.0; 4096], vec![4096, 1]);
        assert!(row.binary(&col, '+', 1 << 20).unwrap_err().contains("more than"));
        let parts = vec![row.clone(); 300];
        assert!(Const::concat(&parts, 0, 1 << 20).unwrap_err().contains("more than"));
        let mut t =
            crate::proto::TensorProto { dims: vec![0, i64::MAX], data_type: Some(DT_FLOAT), ..Default::default() };
        assert!(Const::from_proto(&t, "w").unwrap_err().contains("more than"));
        t.dims = vec![1; 40];
        assert!(Const::from_proto(&t, "w").unwrap_err().contains("rank 40"));
    }
}
