#include "plm/model/lora.h"

#include <fnmatch.h>

#include <map>
#include <mutex>
#include <stdexcept>

#include "plm/common/counter_hash.h"
#include "plm/config/source.h"

namespace plm::model {

at::Tensor LoraAdapter::add_to(const at::Tensor& y, const at::Tensor& x, bool training) const {
  if (!defined()) return y;
  const at::Tensor in = training && dropout > 0 ? LoraDropoutScope::drop(x, dropout) : x;
  return y + at::linear(at::linear(in, A), B).mul(scale);
}

LoraAdapter LoraAdapter::attach(torch::nn::Module& host, int64_t in, int64_t out, int64_t rank, double scale,
                                double dropout, const at::TensorOptions& options) {
  LoraAdapter a;
  a.A = host.register_module("lora_A", std::make_shared<torch::nn::Module>())
            ->register_parameter("weight", at::empty({rank, in}, options));
  a.B = host.register_module("lora_B", std::make_shared<torch::nn::Module>())
            ->register_parameter("weight", at::empty({out, rank}, options));
  a.scale = scale;
  a.dropout = dropout;
  return a;
}

namespace {
thread_local LoraDropoutScope* innermost = nullptr;
constexpr uint64_t kDropoutDomain = 0x4c6f524144726f70ULL;  // "LoRADrop": apart from DropPath's draws
}  // namespace

LoraDropoutScope::LoraDropoutScope(const std::vector<uint64_t>& row_keys, uint64_t block)
    : keys_(row_keys), block_(block), outer_(innermost) {
  innermost = this;
}

LoraDropoutScope::~LoraDropoutScope() {
  innermost = outer_;
}

at::Tensor LoraDropoutScope::drop(const at::Tensor& x, double p) {
  LoraDropoutScope* s = innermost;
  if (!s || s->keys_.empty()) return at::dropout(x, p, /*train=*/true);
  TORCH_CHECK(x.dim() >= 1 && x.size(0) == static_cast<int64_t>(s->keys_.size()), "LoRA dropout: ", s->keys_.size(),
              " row keys for an input of ", x.size(0), " rows");
  const uint64_t call = s->calls_++;
  const double keep = 1.0 - p;
  // One generator of x's device per row, seeded by the row's coordinates: the row's mask depends on nothing else.
  at::Tensor kept = at::empty(x.sizes(), x.options().dtype(at::kFloat));
  at::Generator device_default = at::globalContext().defaultGenerator(x.device());
  for (int64_t r = 0; r < x.size(0); ++r) {
    at::Generator g;
    {
      std::lock_guard<std::mutex> lock(device_default.mutex());  // other threads may draw from it meanwhile
      g = device_default.clone();
    }
    g.set_current_seed(counter_hash(s->keys_[r] ^ kDropoutDomain, s->block_, call));
    kept[r].bernoulli_(keep, g);
  }
  return x * kept.div_(keep).to(x.scalar_type());
}

std::vector<std::string> lora_target_patterns(const std::string& targets) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= targets.size()) {
    const size_t comma = std::min(targets.find(',', start), targets.size());
    std::string p = targets.substr(start, comma - start);
    p.erase(0, p.find_first_not_of(" \t"));
    p.erase(p.find_last_not_of(" \t") + 1);
    if (p.empty())
      throw config::ConfigError("model.lora.targets: '" + targets +
                                "' has an empty pattern (patterns are separated "
                                "by commas, e.g. wq,wv).");
    out.push_back(p);
    start = comma + 1;
  }
  return out;
}

bool is_lora_target(const std::string& name, const std::vector<std::string>& patterns) {
  for (const std::string& p : patterns) {
    if (p == "all") return true;
    if (p.find('*') != std::string::npos) {
      if (fnmatch(p.c_str(), name.c_str(), 0) == 0) return true;
    } else if (name == p || (name.size() > p.size() && name.compare(name.size() - p.size(), p.size(), p) == 0 &&
                             name[name.size() - p.size() - 1] == '.')) {
      return true;
    }
  }
  return false;
}

bool is_lora_parameter(const std::string& name) {
  auto ends = [&](const char* s) {
    const std::string suffix(s);
    return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return ends(".lora_A.weight") || ends(".lora_B.weight");
}

std::string lora_base_weight(const std::string& name) {
  const std::string host = name.substr(0, name.size() - std::string(".lora_A.weight").size());
  const std::string in_proj = ".attn.in_proj";
  if (host.size() >= in_proj.size() && host.compare(host.size() - in_proj.size(), in_proj.size(), in_proj) == 0)
    return host + "_weight";
  return host + ".weight";
}

NamedTensors merge_lora(const NamedTensors& tensors, double scale) {
  std::map<std::string, at::Tensor> by_name(tensors.begin(), tensors.end());
  std::map<std::string, at::Tensor> merged;  // base name -> W + scale B A
  for (const auto& [name, t] : tensors) {
    if (!is_lora_parameter(name) || name.find(".lora_A.") == std::string::npos) continue;
    const std::string b_name = name.substr(0, name.size() - std::string("lora_A.weight").size()) + "lora_B.weight";
    const std::string base = lora_base_weight(name);
    if (!by_name.count(b_name)) throw std::invalid_argument("LoRA tensor '" + name + "' has no '" + b_name + "'.");
    if (!by_name.count(base))
      throw std::invalid_argument("LoRA tensor '" + name + "' adapts '" + base + "', which is missing.");
    const at::Tensor& w = by_name.at(base);
    const at::Tensor a = t.to(at::kFloat), b = by_name.at(b_name).to(at::kFloat);
    if (a.dim() != 2 || b.dim() != 2 || b.size(1) != a.size(0) || w.dim() != 2 || w.size(0) != b.size(0) ||
        w.size(1) != a.size(1))
      throw std::invalid_argument("LoRA tensors '" + name + "' " + c10::str(a.sizes()) + " and '" + b_name + "' " +
                                  c10::str(b.sizes()) + " do not fit '" + base + "' " + c10::str(w.sizes()) + ".");
    merged[base] = (w.to(at::kFloat) + at::mm(b, a).mul(scale)).to(w.scalar_type());
  }
  NamedTensors out;
  for (const auto& [name, t] : tensors) {
    if (is_lora_parameter(name)) continue;
    const auto it = merged.find(name);
    out.emplace_back(name, it == merged.end() ? t : it->second);
  }
  for (const auto& [name, t] : tensors)
    if (is_lora_parameter(name) && name.find(".lora_B.") != std::string::npos) {
      const std::string a_name = name.substr(0, name.size() - std::string("lora_B.weight").size()) + "lora_A.weight";
      if (!by_name.count(a_name)) throw std::invalid_argument("LoRA tensor '" + name + "' has no '" + a_name + "'.");
    }
  return out;
}

}  // namespace plm::model
