#include "plm/dist/fsdp.h"

#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <array>
#include <deque>
#include <map>

#include "plm/common/log.h"
#include "plm/model/units.h"

namespace plm::dist {
namespace {

using Named = std::vector<std::pair<std::string, at::Tensor>>;

/// One flat buffer: a layout unit (dist/flat_layout.h).
struct Flat {
  UnitLayout layout;
  std::vector<at::Tensor> parameters;  // the model's parameter tensors, in layout order
  at::Tensor shard;                    // leaf [S]: fp32, or the compute dtype for a LoRA run's frozen base
};

/// One unit of the model (model/units.h), gathered and run as a whole: its frozen flat buffer, its trainable one, or
/// both (a unit that mixes them, as LoRA's base weights and adapters do, is two buffers: only the trainable one is
/// reduced, and a LoRA run's frozen one is held in the compute dtype).
struct Unit {
  std::string name;
  std::vector<Flat*> flats;  // one or two
  Flat* trainable = nullptr;
};

}  // namespace

struct ShardedModel::Impl : model::UnitRunner {
  model::PerceptionLMImpl* model = nullptr;
  World* world = nullptr;
  at::ScalarType compute = at::kFloat;
  ShardLayout layout;
  std::deque<Flat> flats;  // layout order
  std::deque<Unit> units;
  std::map<std::string, Unit*> index;
  Named shards;
  at::Tensor placeholder;  // what a parameter holds while its unit is not running

  int64_t shard_len(const Flat& f) const { return shard_length(f.layout.numel, world->size()); }

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
  /// A unit's gathered buffers, one per flat buffer.
  struct Gathering {
    Unit* unit = nullptr;
    std::vector<at::Tensor> full, input;
    std::vector<Pending> pending;
    void wait() {
      for (Pending& p : pending) p.wait();
    }
  } ahead;
  struct Reduction {
    Flat* flat = nullptr;
    at::Tensor gradient, shard_grad;
    Pending pending;
  } reducing;

  /// Starts gathering the unit's full flat parameters in the compute dtype.
  Gathering start_gather(Unit& u) {
    Gathering g;
    g.unit = &u;
    for (Flat* f : u.flats) {
      if (world->size() == 1 && f->shard.scalar_type() == compute) {
        g.full.push_back(f->shard.detach());  // the shard is the whole buffer: no copy
        continue;
      }
      g.full.push_back(at::empty({shard_len(*f) * world->size()}, f->shard.options().dtype(compute)));
      g.input.push_back(f->shard.detach().to(compute));
      g.pending.push_back(world->all_gather_into_tensor_async(g.full.back(), g.input.back()));
    }
    return g;
  }

  /// Makes the model's parameters of `u` views of its gathered buffers.
  static void attach(Unit& u, const std::vector<at::Tensor>& full) {
    for (size_t k = 0; k < u.flats.size(); ++k) {
      Flat& f = *u.flats[k];
      for (size_t i = 0; i < f.parameters.size(); ++i) {
        const FlatParameter& p = f.layout.parameters[i];
        f.parameters[i].set_data(full[k].narrow(0, p.offset, p.numel).view(p.shape));
      }
    }
  }

  /// The unit's gathered parameters, attached: from the prefetch when it holds this unit, else gathered now.
  std::vector<at::Tensor> gather(Unit& u) {
    Gathering g;
    if (ahead.unit == &u) {
      g = std::move(ahead);
      ahead = Gathering{};
    } else {
      drop_prefetch();
      g = start_gather(u);
    }
    g.wait();
    attach(u, g.full);
    return std::move(g.full);
  }

  void drop_prefetch() {
    if (!ahead.unit) return;
    ahead.wait();
    free_buffers(*ahead.unit, ahead.full);
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
            u.name);
      prefetch = false;
      return nullptr;
    }
    ++position;
    return position < order.uses.size() ? order.uses[position] : nullptr;
  }

  /// Gathers `u` for a use in pass `p` and starts gathering the pass's next unit.
  std::vector<at::Tensor> gather_for(Pass p, Unit& u) {
    Unit* next = step_order(p, u);
    std::vector<at::Tensor> full = gather(u);
    if (next && prefetch && world->size() > 1) ahead = start_gather(*next);
    return full;
  }

  /// Empties the unit's parameters and frees the gathered buffers now (the backend's finished work may still hold a
  /// reference to them for a while: docs/ARCHITECTURE.md, sharding pitfall 7).
  void release(Unit& u, std::vector<at::Tensor>& full) {
    for (Flat* f : u.flats)
      for (at::Tensor& p : f->parameters) p.set_data(placeholder);
    free_buffers(u, full);
  }

  /// Frees gathered buffers' memory now, except a shard itself (one rank, a shard in the compute dtype).
  static void free_buffers(const Unit& u, std::vector<at::Tensor>& full) {
    for (size_t k = 0; k < full.size(); ++k)
      if (full[k].defined() && !full[k].is_alias_of(u.flats[k]->shard))
        full[k].storage().unsafeGetStorageImpl()->reset();
    full.clear();
  }

  /// The flat buffer's parameter gradients (compute dtype, full size) as one padded fp32 buffer; the parameters'
  /// gradients are dropped.
  at::Tensor flat_gradients(Flat& f) {
    at::Tensor flat = at::zeros({shard_len(f) * world->size()}, f.shard.options());
    for (size_t i = 0; i < f.parameters.size(); ++i) {
      at::Tensor& p = f.parameters[i];
      if (!p.grad().defined()) continue;
      const FlatParameter& fp = f.layout.parameters[i];
      flat.narrow(0, fp.offset, fp.numel).copy_(p.grad().reshape({-1}));
      p.mutable_grad().reset();
    }
    return flat;
  }

  /// Starts reduce-scattering (sum) the flat gradient into a shard-sized one, after finishing the previous.
  void start_reduction(Flat& f, at::Tensor gradient) {
    finish_reduction();
    reducing.flat = &f;
    reducing.gradient = std::move(gradient);
    reducing.shard_grad = at::empty({shard_len(f)}, f.shard.options());
    reducing.pending = world->reduce_scatter_tensor_async(reducing.shard_grad, reducing.gradient, ReduceOp::sum);
  }

  /// Waits for the reduction in flight and adds it into its shard's gradient.
  void finish_reduction() {
    if (!reducing.flat) return;
    reducing.pending.wait();
    at::Tensor& grad = reducing.flat->shard.mutable_grad();
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
  // `shard` (the unit's trainable shard, else its frozen one) is an input so that autograd accumulates the returned
  // shard gradient into shard.grad.
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& /*shard*/,
                            const c10::intrusive_ptr<UnitCall>& call) {
    ctx->save_for_backward({x});
    ctx->saved_data["call"] = c10::IValue::make_capsule(call);
    ShardedModel::Impl& owner = *call->owner;
    std::vector<at::Tensor> full = owner.gather_for(ShardedModel::Impl::Pass::forward, *call->unit);
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
    std::vector<at::Tensor> full = owner.gather_for(ShardedModel::Impl::Pass::backward, unit);
    {
      // The engine runs backward with grad mode off (docs/ARCHITECTURE.md, sharding pitfall 1).
      at::AutoGradMode grad_mode(true);
      at::Tensor y = call->fn(input);
      if (y.requires_grad() && grad_out[0].defined()) torch::autograd::backward({y}, {grad_out[0]});
    }
    at::Tensor shard_grad;
    if (unit.trainable) {
      at::Tensor flat = owner.flat_gradients(*unit.trainable);
      if (owner.world->size() == 1)
        shard_grad = flat;
      else
        owner.start_reduction(*unit.trainable, std::move(flat));
    }
    owner.release(unit, full);
    return {input_grad ? input.grad() : at::Tensor(), shard_grad, at::Tensor()};
  }
};

}  // namespace

at::Tensor ShardedModel::Impl::run(const std::string& name, const model::Block& fn, const at::Tensor& x) {
  const auto it = index.find(name);
  TORCH_CHECK(it != index.end(), "the sharded model has no unit '", name, "'");
  Unit& u = *it->second;
  if (!at::GradMode::is_enabled()) {  // validation or generation: no prefetch, no recorded order
    std::vector<at::Tensor> full = gather(u);
    at::Tensor y = fn(x);
    release(u, full);
    return y;
  }
  const at::Tensor& shard = (u.trainable ? u.trainable : u.flats.front())->shard;
  return UnitFunction::apply(x, shard, c10::make_intrusive<UnitCall>(this, &u, fn));
}

ShardedModel::ShardedModel(model::PerceptionLMImpl& model, World& world, at::ScalarType compute)
    : impl_(std::make_shared<Impl>()) {
  Impl& m = *impl_;
  m.model = &model;
  m.world = &world;
  m.compute = compute;
  m.layout.world_size = world.size();
  // Flat buffers in the order of their units' first parameters, a unit's frozen one before its trainable one.
  std::vector<std::string> order;
  std::map<std::string, std::array<std::vector<std::pair<std::string, at::Tensor>>, 2>> parts;  // frozen, trainable
  for (const auto& item : model.named_parameters()) {
    const std::string unit = model::unit_of(item.key());
    if (!parts.count(unit)) order.push_back(unit);
    parts[unit][item.value().requires_grad() ? 1 : 0].emplace_back(item.key(), item.value());
  }
  for (const std::string& name : order) {
    Unit& u = m.units.emplace_back();
    u.name = name;
    for (const bool trainable : {false, true}) {
      const auto& params = parts[name][trainable ? 1 : 0];
      if (params.empty()) continue;
      Flat& f = m.flats.emplace_back();
      f.layout.name = trainable && !u.flats.empty() ? name + kTrainableSuffix : name;
      f.layout.trainable = trainable;
      for (const auto& [key, p] : params) {
        f.layout.parameters.push_back({key, p.sizes().vec(), f.layout.numel, p.numel()});
        f.layout.numel += p.numel();
        f.parameters.push_back(p);
      }
      u.flats.push_back(&f);
      if (trainable) u.trainable = &f;
    }
    m.index.emplace(name, &u);
  }
  const int64_t rank = world.rank();
  at::Device device = at::kCPU;
  for (Flat& f : m.flats) {
    const int64_t s = m.shard_len(f);
    device = f.parameters.front().device();
    // LoRA's base is never updated: its shard is held in the compute dtype, as MasterWeights holds it unsharded.
    const at::ScalarType dtype = model.args.lora && !f.layout.trainable ? compute : at::kFloat;
    at::Tensor flat = at::zeros({s * world.size()}, f.parameters.front().options().dtype(dtype));
    for (size_t i = 0; i < f.parameters.size(); ++i)
      flat.narrow(0, f.layout.parameters[i].offset, f.layout.parameters[i].numel)
          .copy_(f.parameters[i].detach().reshape({-1}));
    f.shard = flat.narrow(0, rank * s, s).clone().requires_grad_(f.layout.trainable);
    m.layout.units.push_back(f.layout);
    m.shards.emplace_back(f.layout.name, f.shard);
  }
  m.placeholder = at::empty({0}, at::TensorOptions().dtype(compute).device(device));
  for (Flat& f : m.flats)
    for (at::Tensor& p : f.parameters) p.set_data(m.placeholder);
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
  for (const Flat& f : impl_->flats)
    if (f.layout.trainable) out.emplace_back(f.layout.name, f.shard);
  return out;
}

std::vector<at::Tensor> ShardedModel::matrix_masks() const {
  std::vector<at::Tensor> out;
  const Impl& m = *impl_;
  for (const Flat& f : m.flats) {
    if (!f.layout.trainable) continue;
    const int64_t s = m.shard_len(f);
    at::Tensor mask = at::zeros({s * m.world->size()}, f.shard.options().requires_grad(false));
    for (const FlatParameter& p : f.layout.parameters)
      if (p.shape.size() >= 2) mask.narrow(0, p.offset, p.numel).fill_(1);
    out.push_back(mask.narrow(0, m.world->rank() * s, s).clone());
  }
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> ShardedModel::full_parameters() const {
  Named out;
  const Impl& m = *impl_;
  for (const Flat& f : m.flats) {
    at::Tensor full = at::empty({m.shard_len(f) * m.world->size()}, f.shard.options().requires_grad(false));
    m.world->all_gather_into_tensor(full, f.shard.detach());
    full = full.to(at::kCPU, at::kFloat);
    for (const FlatParameter& p : f.layout.parameters)
      out.emplace_back(p.name, full.narrow(0, p.offset, p.numel).view(p.shape).clone());
  }
  return out;
}

ShardedModel::Footprint ShardedModel::footprint() const {
  Footprint fp;
  const Impl& m = *impl_;
  for (const Flat& f : m.flats) {
    fp.shard_bytes += f.shard.nbytes();
    if (f.shard.grad().defined()) fp.grad_bytes += f.shard.grad().nbytes();
    const int64_t s = m.shard_len(f), begin = m.world->rank() * s;
    fp.padding_elements += std::max<int64_t>(0, begin + s - std::max(begin, f.layout.numel));
  }
  return fp;
}

}  // namespace plm::dist
