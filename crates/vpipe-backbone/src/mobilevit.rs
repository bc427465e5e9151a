//! The MobileViT v1 backbone.

use burn::tensor::Tensor;

use crate::config::MobileVitConfig;
use crate::error::{BackboneError, Result};
use crate::kernels::Act;
use crate::layers::{
    Activation, ConvNorm, ConvSpec, InvertedResidual, MobileVitBlock, MobileVitBlockSpec,
};
use crate::params::Params;

/// The feature maps of one forward pass, `[batch, channels, height, width]` each.
#[derive(Debug, Clone)]
pub struct Features {
    /// Output of layers 1 to 5: output strides 2, 4, 8, 16 and 32 (or less where
    /// the backbone was built with output stride 16 or 8).
    pub levels: [Tensor<4>; 5],
}

impl Features {
    /// The deepest feature map (layer 5).
    pub fn last(&self) -> &Tensor<4> {
        &self.levels[4]
    }

    /// The output of layer `n` (1 to 5).
    pub fn layer(&self, n: usize) -> Option<&Tensor<4>> {
        n.checked_sub(1).and_then(|i| self.levels.get(i))
    }
}

/// One stage of the backbone.
#[derive(Debug, Clone)]
enum Stage {
    Mv2(Vec<InvertedResidual>),
    Vit(Box<(InvertedResidual, MobileVitBlock)>),
}

impl Stage {
    fn run(&self, x: &Act<4>) -> Act<4> {
        match self {
            Stage::Mv2(blocks) => {
                let (first, rest) = blocks.split_first().expect("a stage has blocks");
                rest.iter().fold(first.run(x), |x, b| b.run(&x))
            }
            Stage::Vit(b) => b.1.run(&b.0.run(x)),
        }
    }
}

/// The MobileViT v1 backbone: stem and layers 1 to 5.
#[derive(Debug, Clone)]
pub struct MobileVit {
    config: MobileVitConfig,
    stem: ConvNorm,
    stages: Vec<Stage>,
}

impl MobileVit {
    /// Builds the backbone from canonical parameters (`conv_1.*`, `layer_1.*` ... `layer_5.*`).
    pub fn load(params: &mut Params, config: &MobileVitConfig) -> Result<Self> {
        crate::check_output_stride(config.output_stride).map_err(BackboneError::Input)?;
        let stem = ConvNorm::load(
            params,
            "conv_1",
            ConvSpec::new(3, config.stem_channels, 3, Activation::Silu).stride(2),
        )?;
        let mut stages = Vec::with_capacity(5);
        let mut in_ch = config.stem_channels;
        for (i, st) in config.mv2_stages.iter().enumerate() {
            let mut blocks = Vec::with_capacity(st.blocks);
            for j in 0..st.blocks {
                let stride = if j == 0 { st.stride } else { 1 };
                blocks.push(InvertedResidual::load(
                    params,
                    &format!("layer_{}.{j}", i + 1),
                    in_ch,
                    st.out_channels,
                    config.mv2_hidden(in_ch),
                    stride,
                    1,
                )?);
                in_ch = st.out_channels;
            }
            stages.push(Stage::Mv2(blocks));
        }
        // Output stride 16 removes the stride of layer 5, output stride 8 that of
        // layers 4 and 5; as in ml-cvnets, the strided block then uses the dilation
        // reached before the stage (1, or 2 for layer 5 at output stride 8).
        let mut dilation = 1;
        for (i, st) in config.vit_stages.iter().enumerate() {
            let layer = i + 3;
            let dilate = (layer == 5 && config.output_stride <= 16)
                || (layer == 4 && config.output_stride == 8);
            let (stride, block_dilation) = if dilate {
                let d = dilation;
                dilation *= 2;
                (1, d)
            } else {
                (2, 1)
            };
            let down = InvertedResidual::load(
                params,
                &format!("layer_{layer}.0"),
                in_ch,
                st.out_channels,
                config.mv2_hidden(in_ch),
                stride,
                block_dilation,
            )?;
            let block = MobileVitBlock::load(
                params,
                &format!("layer_{layer}.1"),
                MobileVitBlockSpec {
                    channels: st.out_channels,
                    dim: st.transformer_dim,
                    ffn_dim: st.ffn_dim,
                    depth: st.transformer_blocks,
                    heads: config.num_heads,
                    patch: config.patch_size,
                    ln_eps: config.ln_eps,
                },
            )?;
            in_ch = st.out_channels;
            stages.push(Stage::Vit(Box::new((down, block))));
        }
        Ok(Self {
            config: config.clone(),
            stem,
            stages,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &MobileVitConfig {
        &self.config
    }

    /// Runs the backbone on a batch of preprocessed images `[batch, 3, height, width]`.
    pub fn forward(&self, x: Tensor<4>) -> Result<Features> {
        let [_, c, h, w] = x.dims();
        if c != 3 {
            return Err(BackboneError::Input(format!(
                "expected 3 input channels, got {c} (input shape {:?})",
                x.dims()
            )));
        }
        if h < 32 || w < 32 {
            return Err(BackboneError::Input(format!(
                "input {h}x{w} is smaller than the 32x32 minimum of MobileViT"
            )));
        }
        let device = x.device();
        let mut levels = Vec::with_capacity(5);
        let mut x = self
            .stem
            .run(&Act::from_tensor(x, self.stem.kernels()), None);
        // Each stage's output becomes a level once the next stage has read it, so
        // that it moves into the level instead of being copied.
        for (i, stage) in self.stages.iter().enumerate() {
            let y = stage.run(&x);
            let input = std::mem::replace(&mut x, y);
            if i > 0 {
                levels.push(input.into_tensor(&device));
            }
        }
        levels.push(x.into_tensor(&device));
        let levels: [Tensor<4>; 5] = levels
            .try_into()
            .map_err(|_| BackboneError::Input("backbone has fewer than 5 stages".into()))?;
        Ok(Features { levels })
    }
}
