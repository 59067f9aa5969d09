//! What the element-wise backend extensions (`model::gelu`, `model::softmax`) share: their
//! autodiff node, with one input, memory-bound (burn's checkpointing keeps the input and
//! recomputes the output with a retro-forward, as it does for burn's own element-wise nodes),
//! and a backward that needs only the input and the output's gradient; and the way their
//! burn-flex kernels read f32 values and hand results back.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::retro_forward::RetroForward;
use burn::backend::autodiff::checkpoint::state::BackwardStates;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend};
use burn::tensor::DType;
use burn_flex::FlexTensor;

type Primitive<B> = <B as burn::backend::BackendTypes>::FloatTensorPrimitive;

/// The inner backend's kernel and its gradient (`input, output gradient → input gradient`).
pub struct Kernels<B: Backend> {
    pub forward: fn(Primitive<B>) -> Primitive<B>,
    pub backward: fn(Primitive<B>, Primitive<B>) -> Primitive<B>,
}

struct Node<B: Backend> {
    backward: fn(Primitive<B>, Primitive<B>) -> Primitive<B>,
}

impl<B: Backend> core::fmt::Debug for Node<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("UnaryExtensionNode")
    }
}

impl<B: Backend> Backward<B, 1> for Node<B> {
    type State = NodeId;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let input: Primitive<B> = checkpointer.retrieve_node_output(ops.state);
        let backward = self.backward;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| backward(input, grad));
    }
}

/// Recomputes the node's output from its input when checkpointing dropped it.
struct Retro<B: Backend> {
    input: NodeId,
    forward: fn(Primitive<B>) -> Primitive<B>,
}

impl<B: Backend> core::fmt::Debug for Retro<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("UnaryExtensionRetro")
            .field("input", &self.input)
            .finish()
    }
}

impl<B: Backend> RetroForward for Retro<B> {
    fn forward(&self, states: &mut BackwardStates, out_node: NodeId) {
        let input = states.get_state::<Primitive<B>>(&self.input);
        states.save(out_node, (self.forward)(input));
    }
}

/// `kernels.forward(x)` recorded as one autodiff node.
pub fn forward<B: Backend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    kernels: Kernels<B>,
) -> FloatTensor<Autodiff<B, C>> {
    let retro = Retro::<B> {
        input: x.id(),
        forward: kernels.forward,
    };
    let node = Node::<B> {
        backward: kernels.backward,
    };
    match node
        .prepare::<C>([x.node()])
        .memory_bound()
        .retro_forward(retro)
        .parents([&x])
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let state = prep.checkpoint(&x);
            prep.finish(state, (kernels.forward)(x.primitive().clone()))
        }
        OpsKind::UnTracked(prep) => prep.finish((kernels.forward)(x.into_primitive())),
    }
}

/// The gradient kernel on autodiff tensors, untracked: only the node's backward calls it, on
/// the inner backend, so it is never differentiated again.
pub fn backward<B: Backend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    grad: FloatTensor<Autodiff<B, C>>,
    kernel: fn(Primitive<B>, Primitive<B>) -> Primitive<B>,
) -> FloatTensor<Autodiff<B, C>> {
    untracked::<B, C>(kernel(x.into_primitive(), grad.into_primitive()))
}

/// The contiguous f32 values of `t`, or `None` (another dtype, a strided view): the kernels
/// then leave the tensor to burn-flex's own op.
pub fn flex_f32(t: &FlexTensor) -> Option<&[f32]> {
    if t.dtype() != DType::F32 {
        return None;
    }
    t.as_slice::<f32>()
}

/// A kernel's output values as a contiguous burn-flex tensor of `like`'s shape.
pub fn flex_from_f32(values: Vec<f32>, like: &FlexTensor) -> FlexTensor {
    flex_shaped(values, like.layout().shape().clone())
}

/// A kernel's output values as a contiguous burn-flex tensor of `shape`.
pub fn flex_shaped(values: Vec<f32>, shape: burn::tensor::Shape) -> FlexTensor {
    FlexTensor::from_data(burn::tensor::TensorData::new(values, shape))
}

/// Adds `b` into `a` element by element: how the threaded kernels merge their per-task partial
/// column sums (`.reduce(|| vec![0.0; n], add_partials)`).
pub fn add_partials(mut a: Vec<f32>, b: Vec<f32>) -> Vec<f32> {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
    a
}

/// A three-input kernel (`x, scale, shift → output`), as `model::norm` and
/// `model::scaled_gelu` record them.
pub type Ternary<B> = fn(Primitive<B>, Primitive<B>, Primitive<B>) -> Primitive<B>;

/// Recomputes a three-input node's output from its parents when checkpointing dropped it.
pub struct Retro3<B: Backend> {
    pub parents: [NodeId; 3],
    pub forward: Ternary<B>,
}

impl<B: Backend> core::fmt::Debug for Retro3<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TernaryExtensionRetro")
            .field("parents", &self.parents)
            .finish()
    }
}

impl<B: Backend> RetroForward for Retro3<B> {
    fn forward(&self, states: &mut BackwardStates, out_node: NodeId) {
        let [x, scale, shift] = self.parents.map(|id| states.get_state::<Primitive<B>>(&id));
        states.save(out_node, (self.forward)(x, scale, shift));
    }
}

/// An inner-backend result as an untracked autodiff tensor: the extensions' gradient kernels
/// run only inside their nodes' backward, so they are never differentiated again.
pub fn untracked<B: Backend, C: CheckpointStrategy>(
    t: Primitive<B>,
) -> FloatTensor<Autodiff<B, C>> {
    <FloatTensor<Autodiff<B, C>>>::new(t)
}

/// [`untracked`] for the three gradients `(∂x, ∂scale, ∂shift)` of a three-input kernel.
#[allow(clippy::type_complexity)]
pub fn untracked3<B: Backend, C: CheckpointStrategy>(
    (a, b, c): (Primitive<B>, Primitive<B>, Primitive<B>),
) -> (
    FloatTensor<Autodiff<B, C>>,
    FloatTensor<Autodiff<B, C>>,
    FloatTensor<Autodiff<B, C>>,
) {
    (
        untracked::<B, C>(a),
        untracked::<B, C>(b),
        untracked::<B, C>(c),
    )
}
