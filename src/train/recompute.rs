//! Whole-block recomputation for classification training (`dapt train --recompute-blocks`).
//!
//! A DAPT step needs gradients only for the adapters, prompts, TFTS and head, but backward
//! through a frozen block still needs what the block computed: q/k/v, the attention scores,
//! the MLP's hidden layer. burn's gradient checkpointing recomputes element-wise ops only, so
//! those stay alive for every block at once. Here the forward runs the blocks without a graph
//! and keeps only each block's input (`[b, t, c]`, small); backward then walks the blocks in
//! reverse, rebuilding one block's graph at a time from its input and the gradient of its
//! output, so at most one block's intermediates exist at any moment.
//!
//! The results equal the plain step's: the recomputed forward is the same ops on the same
//! values, each block replays the dropout and drop-path masks it drew the first time (the
//! random state is saved per block), and each partial backward is seeded with the exact
//! gradient of the block's output. The cost is one more forward of the blocks.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Gradients, Tensor};

use crate::data::Rng;
use crate::model::classifier::{Classifier, cross_entropy};
use crate::model::layers::{AutodiffContext, ForwardCtx};
use crate::phases::{Clock, Phase};

thread_local! {
    static STEPS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How many steps took this path on the calling thread (for tests and diagnostics, as
/// `readback::reads_on_this_thread` counts reads).
pub fn steps_on_this_thread() -> usize {
    STEPS.with(|s| s.get())
}

/// The loss's gradients for one classification step with blocks recomputed in backward.
pub struct Recomputed {
    /// `[b, k]`, detached from the graph.
    pub logits: Tensor<2>,
    /// `[1]`, detached.
    pub loss: Tensor<1>,
    /// Gradients of every trainable parameter, as one `loss.backward()` would give them.
    pub grads: Gradients,
}

/// Forward and backward of the cross-entropy loss of `model` on grouped clouds
/// (`neighborhoods` `[b, g, m, 3]`, `centers` `[b, g, 3]`, on the autodiff device `ad`).
/// Advances `ctx`'s random state exactly as the plain forward does. `clock` laps the
/// forward (the blocks without a graph and the tail) and leaves backward to the caller's lap.
pub fn loss_and_grads(
    model: &mut Classifier,
    neighborhoods: Tensor<4>,
    centers: Tensor<3>,
    labels: &[usize],
    ctx: &mut ForwardCtx,
    ad: &Device,
    clock: &mut Clock,
) -> Recomputed {
    STEPS.with(|s| s.set(s.get() + 1));
    let kind = model.config.kind;
    let stem = model.stem(neighborhoods, centers, ctx);
    let g = stem.groups();

    // forward without a graph: the same autodiff ops (their values must match the plain
    // step's, and the inner backend's fused kernels round differently) on untracked
    // tensors, keeping only block inputs and random states
    let pos = stem.pos.clone().detach();
    let depth = model.blocks.len();
    let mut inputs: Vec<Tensor<3>> = Vec::with_capacity(depth);
    let mut states: Vec<Option<Rng>> = Vec::with_capacity(depth);
    let mut x = stem.tokens.clone().detach();
    for blk in &model.blocks {
        inputs.push(x.clone());
        states.push(ctx.rng.as_deref().cloned());
        x = kind.block_forward(&blk.clone().no_grad(), x, &pos, ctx).0;
    }

    // the tail with its graph, from a leaf standing for the last block's output
    let leaf = x.require_grad();
    let (_, logits) = model.tail(leaf.clone(), g, ctx);
    let logits_out = logits.clone().inner();
    let loss = cross_entropy(logits, labels);
    let loss_out = loss.clone().inner();
    clock.lap(Phase::Forward);
    let mut grads = loss.backward();
    let mut grad_x = leaf.grad(&grads);
    let mut grad_pos: Option<Tensor<3>> = None;
    let track_pos = kind == crate::model::ModelKind::PointMae && stem.pos.is_tracked();
    // a linear probe trains nothing before the tail: no block needs replaying
    if !stem.tokens.is_tracked() && !track_pos && !model.blocks.iter().any(trains) {
        grad_x = None;
    }

    // backward, one block at a time
    for (i, blk) in model.blocks.iter().enumerate().rev() {
        let (Some(gy), Some(input)) = (grad_x.take(), inputs.pop()) else {
            break;
        };
        let x = input.require_grad();
        let p = if track_pos {
            pos.clone().require_grad()
        } else {
            pos.clone()
        };
        let mut rng = states.get(i).cloned().flatten();
        let mut replay = ForwardCtx {
            training: ctx.training,
            rng: rng.as_mut(),
        };
        let (y, _) = kind.block_forward(blk, x.clone(), &p, &mut replay);
        let seeded = (y * gy.with_autodiff_context_of(ad)).sum();
        let partial = seeded.backward();
        merge_into(blk, &partial, &mut grads);
        grad_x = x.grad(&partial);
        if track_pos && let Some(gp) = p.grad(&partial) {
            grad_pos = Some(match grad_pos.take() {
                Some(acc) => acc + gp,
                None => gp,
            });
        }
    }

    // the stem's trainable parts (DAPT's cls token and first TFTS, or everything when fully
    // fine-tuning), seeded with the gradients of its outputs
    let mut seed: Option<Tensor<1>> = None;
    if let Some(gx) = grad_x
        && stem.tokens.is_tracked()
    {
        seed = Some((stem.tokens * gx.with_autodiff_context_of(ad)).sum());
    }
    if let Some(gp) = grad_pos {
        let s = (stem.pos * gp.with_autodiff_context_of(ad)).sum();
        seed = Some(match seed {
            Some(acc) => acc + s,
            None => s,
        });
    }
    if let Some(s) = seed.filter(Tensor::is_tracked) {
        let partial = s.backward();
        merge_into(&model.cls_token, &partial, &mut grads);
        merge_into(&model.cls_pos, &partial, &mut grads);
        merge_into(&model.encoder, &partial, &mut grads);
        merge_into(&model.pos_embed, &partial, &mut grads);
        merge_into(&model.tfts_1, &partial, &mut grads);
    }

    Recomputed {
        logits: logits_out,
        loss: loss_out,
        grads,
    }
}

/// Whether any parameter of `module` takes gradients.
fn trains<M: Module>(module: &M) -> bool {
    struct Any(bool);
    impl ModuleVisitor for Any {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0 |= param.val().is_require_grad();
        }
    }
    let mut any = Any(false);
    module.visit(&mut any);
    any.0
}

/// Adds the gradients `module`'s parameters have in `from` to their entries in `into`.
fn merge_into<M: Module>(module: &M, from: &Gradients, into: &mut Gradients) {
    struct Merge<'a> {
        from: &'a Gradients,
        into: &'a mut Gradients,
    }
    impl ModuleVisitor for Merge<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let t = param.val();
            if let Some(g) = t.grad(self.from) {
                let g = match t.grad(self.into) {
                    Some(old) => old + g,
                    None => g,
                };
                t.grad_replace(self.into, g);
            }
        }
    }
    module.visit(&mut Merge { from, into });
}
