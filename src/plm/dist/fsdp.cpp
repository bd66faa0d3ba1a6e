#include "plm/dist/fsdp.h"

#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <map>
#include <stdexcept>

#include "plm/common/log.h"
#include "plm/model/units.h"

namespace plm::dist {
namespace {

using Named = std::vector<std::pair<std::string, at::Tensor>>;

struct Unit {
  UnitLayout layout;
  std::vector<at::Tensor> parameters;  // the model's parameter tensors, in layout order
  at::Tensor shard;                    // fp32 leaf [S]
};

}  // namespace

struct ShardedModel::Impl : model::UnitRunner {
  model::PerceptionLMImpl* model = nullptr;
  World* world = nullptr;
  at::ScalarType compute = at::kFloat;
  ShardLayout layout;
  std::vector<Unit> units;
  std::map<std::string, size_t> index;
  Named shards;
  at::Tensor placeholder;  // what a parameter holds while its unit is not running

  int64_t shard_len(const Unit& u) const { return shard_length(u.layout.numel, world->size()); }

  // Overlap (several ranks): the order in which units are used in forward and in backward is recorded during the
  // first micro-batch; from then on each use starts gathering the next unit of its pass before it computes
  // (prefetch), and each backward leaves its reduce-scatter in flight while the next unit recomputes, finishing it
  // at the next unit's backward or in finish_gradients(). Every rank records the same order, so the collectives
  // stay in step; a use that does not follow the recorded order turns prefetching off (on every rank alike).
  enum class Pass { none, forward, backward };
  struct Order {
    std::vector<Unit*> uses;
    bool known = false;
  };
  Pass pass = Pass::none;
  Order orders[2];  // forward, backward
  size_t position = 0;
  bool prefetch = true;
  struct Gathering {
    Unit* unit = nullptr;
    at::Tensor full, input;
    Pending pending;
  } ahead;
  struct Reduction {
    Unit* unit = nullptr;
    at::Tensor flat, shard_grad;
    Pending pending;
  } reducing;

  /// Starts gathering the unit's full flat parameters in the compute dtype.
  Gathering start_gather(Unit& u) {
    Gathering g;
    g.unit = &u;
    if (world->size() == 1 && compute == at::kFloat) {
      g.full = u.shard.detach();  // the shard is the whole buffer: no copy
      return g;
    }
    g.full = at::empty({shard_len(u) * world->size()}, u.shard.options().dtype(compute));
    g.input = u.shard.detach().to(compute);
    g.pending = world->all_gather_into_tensor_async(g.full, g.input);
    return g;
  }

  /// Makes the model's parameters of `u` views of its gathered buffer.
  void attach(Unit& u, const at::Tensor& full) {
    for (size_t i = 0; i < u.parameters.size(); ++i) {
      const FlatParameter& p = u.layout.parameters[i];
      u.parameters[i].set_data(full.narrow(0, p.offset, p.numel).view(p.shape));
    }
  }

  /// The unit's gathered parameters, attached: from the prefetch when it holds this unit, else gathered now.
  at::Tensor gather(Unit& u) {
    Gathering g;
    if (ahead.unit == &u) {
      g = std::move(ahead);
      ahead = Gathering{};
    } else {
      drop_prefetch();
      g = start_gather(u);
    }
    g.pending.wait();
    attach(u, g.full);
    return g.full;
  }

  void drop_prefetch() {
    if (!ahead.unit) return;
    ahead.pending.wait();
    free_buffer(*ahead.unit, ahead.full);
    ahead = Gathering{};
  }

  /// Records or follows the order of unit uses; returns the unit used next in this pass, if known.
  Unit* step_order(Pass p, Unit& u) {
    if (p != pass) {
      if (pass != Pass::none) orders[pass == Pass::forward ? 0 : 1].known = true;  // its first pass is complete
      pass = p;
      position = 0;
    }
    Order& order = orders[p == Pass::forward ? 0 : 1];
    if (!order.known) {
      order.uses.push_back(&u);
      return nullptr;
    }
    if (position >= order.uses.size() || order.uses[position] != &u) {
      if (prefetch)  // the same decision on every rank: they all see the same order
        log::warn(
            "the model used unit '{}' out of the order recorded in the first micro-batch: prefetching of "
            "unit parameters is off from here on",
            u.layout.name);
      prefetch = false;
      return nullptr;
    }
    ++position;
    return position < order.uses.size() ? order.uses[position] : nullptr;
  }

  /// Gathers `u` for a use in pass `p` and starts gathering the pass's next unit.
  at::Tensor gather_for(Pass p, Unit& u) {
    Unit* next = step_order(p, u);
    at::Tensor full = gather(u);
    if (next && prefetch && world->size() > 1) ahead = start_gather(*next);
    return full;
  }

  /// Empties the unit's parameters and frees the gathered buffer now (the backend's finished work may still hold a
  /// reference to it for a while: docs/ARCHITECTURE.md, sharding pitfall 7).
  void release(Unit& u, at::Tensor& full) {
    for (at::Tensor& p : u.parameters) p.set_data(placeholder);
    free_buffer(u, full);
  }

  /// Frees a gathered buffer's memory now, unless it is the shard itself (one rank, fp32).
  static void free_buffer(const Unit& u, at::Tensor& full) {
    if (full.defined() && !full.is_alias_of(u.shard)) full.storage().unsafeGetStorageImpl()->reset();
    full.reset();
  }

  /// The unit's parameter gradients (compute dtype, full size) as one padded fp32 buffer; the parameters'
  /// gradients are dropped.
  at::Tensor flat_gradients(Unit& u) {
    at::Tensor flat = at::zeros({shard_len(u) * world->size()}, u.shard.options());
    for (size_t i = 0; i < u.parameters.size(); ++i) {
      at::Tensor& p = u.parameters[i];
      if (!p.grad().defined()) continue;
      const FlatParameter& f = u.layout.parameters[i];
      flat.narrow(0, f.offset, f.numel).copy_(p.grad().reshape({-1}));
      p.mutable_grad().reset();
    }
    return flat;
  }

  /// Starts reduce-scattering (sum) the unit's flat gradient into a shard-sized one, after finishing the previous.
  void start_reduction(Unit& u, at::Tensor flat) {
    finish_reduction();
    reducing.unit = &u;
    reducing.flat = std::move(flat);
    reducing.shard_grad = at::empty({shard_len(u)}, u.shard.options());
    reducing.pending = world->reduce_scatter_tensor_async(reducing.shard_grad, reducing.flat, ReduceOp::sum);
  }

  /// Waits for the reduction in flight and adds it into its shard's gradient.
  void finish_reduction() {
    if (!reducing.unit) return;
    reducing.pending.wait();
    at::Tensor& grad = reducing.unit->shard.mutable_grad();
    if (grad.defined())
      grad.add_(reducing.shard_grad);
    else
      grad = reducing.shard_grad;
    reducing = Reduction{};
  }

  at::Tensor run(const std::string& unit, const model::Block& fn, const at::Tensor& x) override;
};

namespace {

/// One use of a unit in the autograd graph.
struct UnitCall : torch::CustomClassHolder {
  UnitCall(ShardedModel::Impl* o, Unit* u, model::Block f) : owner(o), unit(u), fn(std::move(f)) {}
  ShardedModel::Impl* owner;
  Unit* unit;
  model::Block fn;
};

struct UnitFunction : torch::autograd::Function<UnitFunction> {
  // `shard` is an input so that autograd accumulates the returned shard gradient into shard.grad.
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& /*shard*/,
                            const c10::intrusive_ptr<UnitCall>& call) {
    ctx->save_for_backward({x});
    ctx->saved_data["call"] = c10::IValue::make_capsule(call);
    ShardedModel::Impl& owner = *call->owner;
    at::Tensor full = owner.gather_for(ShardedModel::Impl::Pass::forward, *call->unit);
    at::Tensor y = call->fn(x);  // grad mode is off inside forward
    owner.release(*call->unit, full);
    return y;
  }

  // With several ranks the shard's gradient is not returned but left reducing (Impl::start_reduction); the
  // trainer's finish_gradients() adds the last one.
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const auto call = c10::static_intrusive_pointer_cast<UnitCall>(ctx->saved_data["call"].toCapsule());
    ShardedModel::Impl& owner = *call->owner;
    Unit& unit = *call->unit;
    const at::Tensor x = ctx->get_saved_variables()[0];
    const bool input_grad = x.requires_grad();
    at::Tensor input = x.is_floating_point() ? x.detach().requires_grad_(input_grad) : x;
    at::Tensor full = owner.gather_for(ShardedModel::Impl::Pass::backward, unit);
    {
      // The engine runs backward with grad mode off (docs/ARCHITECTURE.md, sharding pitfall 1).
      at::AutoGradMode grad_mode(true);
      at::Tensor y = call->fn(input);
      if (y.requires_grad() && grad_out[0].defined()) torch::autograd::backward({y}, {grad_out[0]});
    }
    at::Tensor shard_grad;
    if (unit.layout.trainable) {
      at::Tensor flat = owner.flat_gradients(unit);
      if (owner.world->size() == 1)
        shard_grad = flat;
      else
        owner.start_reduction(unit, std::move(flat));
    }
    owner.release(unit, full);
    return {input_grad ? input.grad() : at::Tensor(), shard_grad, at::Tensor()};
  }
};

}  // namespace

at::Tensor ShardedModel::Impl::run(const std::string& name, const model::Block& fn, const at::Tensor& x) {
  const auto it = index.find(name);
  TORCH_CHECK(it != index.end(), "the sharded model has no unit '", name, "'");
  Unit& u = units[it->second];
  if (!at::GradMode::is_enabled()) {  // validation or generation: no prefetch, no recorded order
    at::Tensor full = gather(u);
    at::Tensor y = fn(x);
    release(u, full);
    return y;
  }
  return UnitFunction::apply(x, u.shard, c10::make_intrusive<UnitCall>(this, &u, fn));
}

ShardedModel::ShardedModel(model::PerceptionLMImpl& model, World& world, at::ScalarType compute)
    : impl_(std::make_shared<Impl>()) {
  Impl& m = *impl_;
  m.model = &model;
  m.world = &world;
  m.compute = compute;
  m.layout.world_size = world.size();
  for (const auto& item : model.named_parameters()) {
    const std::string unit = model::unit_of(item.key());
    auto [it, added] = m.index.emplace(unit, m.units.size());
    if (added) m.units.push_back(Unit{{unit, {}, 0, item.value().requires_grad()}, {}, {}});
    Unit& u = m.units[it->second];
    if (u.layout.trainable != item.value().requires_grad())
      throw std::invalid_argument("the unit '" + unit + "' mixes trainable and frozen parameters ('" + item.key() +
                                  "'): it cannot be sharded as one buffer.");
    const at::Tensor& p = item.value();
    u.layout.parameters.push_back({item.key(), p.sizes().vec(), u.layout.numel, p.numel()});
    u.layout.numel += p.numel();
    u.parameters.push_back(p);
  }
  const int64_t rank = world.rank();
  at::Device device = at::kCPU;
  for (Unit& u : m.units) {
    const int64_t s = m.shard_len(u);
    device = u.parameters.front().device();
    at::Tensor flat = at::zeros({s * world.size()}, u.parameters.front().options().dtype(at::kFloat));
    for (size_t i = 0; i < u.parameters.size(); ++i)
      flat.narrow(0, u.layout.parameters[i].offset, u.layout.parameters[i].numel)
          .copy_(u.parameters[i].detach().reshape({-1}));
    u.shard = flat.narrow(0, rank * s, s).clone().requires_grad_(u.layout.trainable);
    m.layout.units.push_back(u.layout);
    m.shards.emplace_back(u.layout.name, u.shard);
  }
  m.placeholder = at::empty({0}, at::TensorOptions().dtype(compute).device(device));
  for (Unit& u : m.units)
    for (at::Tensor& p : u.parameters) p.set_data(m.placeholder);
  model.set_unit_runner(impl_);
}

ShardedModel::~ShardedModel() {
  impl_->drop_prefetch();
  impl_->finish_reduction();
  impl_->model->set_unit_runner(nullptr);
}

void ShardedModel::finish_gradients() {
  impl_->finish_reduction();
}

const ShardLayout& ShardedModel::layout() const {
  return impl_->layout;
}

const std::vector<std::pair<std::string, at::Tensor>>& ShardedModel::shards() const {
  return impl_->shards;
}

std::vector<std::pair<std::string, at::Tensor>> ShardedModel::trainable_shards() const {
  Named out;
  for (const Unit& u : impl_->units)
    if (u.layout.trainable) out.emplace_back(u.layout.name, u.shard);
  return out;
}

std::vector<at::Tensor> ShardedModel::matrix_masks() const {
  std::vector<at::Tensor> out;
  const Impl& m = *impl_;
  for (const Unit& u : m.units) {
    if (!u.layout.trainable) continue;
    const int64_t s = m.shard_len(u);
    at::Tensor mask = at::zeros({s * m.world->size()}, u.shard.options().requires_grad(false));
    for (const FlatParameter& p : u.layout.parameters)
      if (p.shape.size() >= 2) mask.narrow(0, p.offset, p.numel).fill_(1);
    out.push_back(mask.narrow(0, m.world->rank() * s, s).clone());
  }
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> ShardedModel::full_parameters() const {
  Named out;
  const Impl& m = *impl_;
  for (const Unit& u : m.units) {
    at::Tensor full = at::empty({m.shard_len(u) * m.world->size()}, u.shard.options().requires_grad(false));
    m.world->all_gather_into_tensor(full, u.shard.detach());
    full = full.cpu();
    for (const FlatParameter& p : u.layout.parameters)
      out.emplace_back(p.name, full.narrow(0, p.offset, p.numel).view(p.shape).clone());
  }
  return out;
}

ShardedModel::Footprint ShardedModel::footprint() const {
  Footprint f;
  const Impl& m = *impl_;
  for (const Unit& u : m.units) {
    f.shard_bytes += u.shard.nbytes();
    if (u.shard.grad().defined()) f.grad_bytes += u.shard.grad().nbytes();
    const int64_t s = m.shard_len(u), begin = m.world->rank() * s;
    f.padding_elements += std::max<int64_t>(0, begin + s - std::max(begin, u.layout.numel));
  }
  return f;
}

}  // namespace plm::dist
