//! The model as a `.safetensors` file (Hugging Face's format: a JSON header,
//! then each tensor's little-endian bytes), for PyTorch, candle, burn and
//! numpy users: the arrays of `model.npz` under the same names and shapes
//! (`w1` outputs by inputs, `b1` outputs by 1, ...), float32, bit for bit.
//! The header's metadata holds `shape` (`784-...-10`) and, when the model
//! file has one, its `meta` JSON as text.

use super::Mlp;
use crate::output::{write_atomic, WriteError};
use ::safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

impl Mlp {
    /// The model as a `.safetensors` file's bytes; `meta` (the `meta` JSON
    /// of the model's `.npz`, if it has one) goes into the metadata.
    pub fn to_safetensors(&self, meta: Option<&str>) -> Vec<u8> {
        let mut arrays = Vec::with_capacity(2 * self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let (outputs, inputs) = layer.w.dim();
            arrays.push((
                format!("w{}", i + 1),
                vec![outputs, inputs],
                le_bytes(&layer.w),
            ));
            arrays.push((format!("b{}", i + 1), vec![outputs, 1], le_bytes(&layer.b)));
        }
        let views = arrays.iter().map(|(name, shape, bytes)| {
            let view = TensorView::new(Dtype::F32, shape.clone(), bytes)
                .expect("as many bytes as the shape has float32 values");
            (name.as_str(), view)
        });
        let mut metadata = HashMap::from([("shape".to_string(), self.shape().to_string())]);
        if let Some(meta) = meta {
            metadata.insert("meta".to_string(), meta.to_string());
        }
        ::safetensors::serialize(views, Some(metadata))
            .expect("a header of names, shapes and offsets always serialises")
    }

    /// [`Mlp::to_safetensors`] written to `path` under [`crate::output`]'s
    /// policy.
    pub fn save_safetensors(&self, path: &Path, meta: Option<&str>) -> Result<(), WriteError> {
        let bytes = self.to_safetensors(meta);
        write_atomic(path, |w| w.write_all(&bytes))
    }
}

/// An array's values, row-major, as little-endian bytes.
fn le_bytes<D: ndarray::Dimension>(a: &ndarray::Array<f32, D>) -> Vec<u8> {
    a.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Init, Layers};

    #[test]
    fn arrays_are_the_npz_ones_bit_for_bit_with_the_metadata() {
        let m = Mlp::init(&Layers::parse("5-4").unwrap(), Init::He, 3).unwrap();
        let bytes = m.to_safetensors(Some("{\"format\":\"mnist-blas model\"}"));
        let file = ::safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut names = file.names();
        names.sort();
        assert_eq!(names, ["b1", "b2", "b3", "w1", "w2", "w3"]);
        for (i, layer) in m.layers.iter().enumerate() {
            let (outputs, inputs) = layer.w.dim();
            for (name, shape, values) in [
                (
                    format!("w{}", i + 1),
                    vec![outputs, inputs],
                    &layer.w.as_slice().unwrap(),
                ),
                (
                    format!("b{}", i + 1),
                    vec![outputs, 1],
                    &layer.b.as_slice().unwrap(),
                ),
            ] {
                let t = file.tensor(&name).unwrap();
                assert_eq!(t.dtype(), Dtype::F32, "{name}");
                assert_eq!(t.shape(), shape, "{name}");
                let read: Vec<u32> = t
                    .data()
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                let want: Vec<u32> = values.iter().map(|v| v.to_bits()).collect();
                assert_eq!(read, want, "{name}");
            }
        }
        let (_, header) = ::safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let meta = header.metadata().as_ref().unwrap();
        assert_eq!(meta["shape"], "784-5-4-10");
        assert_eq!(meta["meta"], "{\"format\":\"mnist-blas model\"}");
        // Without a meta, only the shape.
        let bytes = m.to_safetensors(None);
        let (_, header) = ::safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(header.metadata().as_ref().unwrap().len(), 1);
    }
}
