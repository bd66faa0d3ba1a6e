#include "plm/ckpt/torch_pickle.h"

#include <cstring>
#include <memory>
#include <optional>
#include <unordered_map>

#include <c10/util/Exception.h>
#include <c10/util/StringUtil.h>
#include <c10/util/strides.h>
#include <caffe2/serialize/inline_container.h>

namespace plm::ckpt {
namespace {

// The pickle opcodes torch.save emits with protocol 2 (its default) and 4, named as in Python's pickletools.
// clang-format off
enum class Op : uint8_t {
  MARK = '(', STOP = '.', PROTO = 0x80, FRAME = 0x95, EMPTY_DICT = '}', EMPTY_LIST = ']', EMPTY_TUPLE = ')',
  TUPLE = 't', LIST = 'l', DICT = 'd', TUPLE1 = 0x85, TUPLE2 = 0x86, TUPLE3 = 0x87, BINUNICODE = 'X',
  SHORT_BINUNICODE = 0x8c, BINUNICODE8 = 0x8d, BINSTRING = 'T', SHORT_BINSTRING = 'U', BINBYTES = 'B',
  SHORT_BINBYTES = 'C', BININT = 'J', BININT1 = 'K', BININT2 = 'M', LONG1 = 0x8a, BINFLOAT = 'G', NEWTRUE = 0x88,
  NEWFALSE = 0x89, NONE = 'N', BINPUT = 'q', LONG_BINPUT = 'r', MEMOIZE = 0x94, BINGET = 'h', LONG_BINGET = 'j',
  GLOBAL = 'c', STACK_GLOBAL = 0x93, REDUCE = 'R', BUILD = 'b', NEWOBJ = 0x81, BINPERSID = 'Q', SETITEM = 's',
  SETITEMS = 'u', APPEND = 'a', APPENDS = 'e',
};
// clang-format on

struct Value;
using Ref = Value*;  // owned by the Unpickler's arena: values may share children or form cycles (via the memo)

// A pickled Python value, reduced to what state dicts need. Objects of classes we do not know become kObject
// (and are skipped); tensors stay references into storages until the file's records are read.
struct Value {
  enum Kind { kNone, kBool, kInt, kFloat, kStr, kTuple, kList, kDict, kGlobal, kStorage, kTensor, kObject };
  Kind kind = kNone;
  int64_t i = 0;                      // kInt, kBool; kStorage: numel; kTensor: storage offset
  std::string s;                      // kStr; kGlobal: "module.name"; kStorage: record key
  at::ScalarType dtype = at::kByte;   // kStorage
  std::vector<Ref> items;             // kTuple, kList; kDict: key, value, key, value...; kTensor: {storage}
  std::vector<int64_t> size, stride;  // kTensor
};

// Runs a torch.save pickle. Nothing is imported or executed: a GLOBAL only names a function, and REDUCE
// interprets the few that state dicts use (see reduce()). Every value lives in the arena until the Unpickler is
// destroyed, which frees them one by one: no recursion however deep the nesting, no leak however cyclic. Each
// opcode makes at most one value (~150 bytes), so memory is at most ~150x data.pkl's size plus its strings.
class Unpickler {
 public:
  Unpickler(std::string path, const char* data, size_t n) : path_(std::move(path)), p_(data), end_(data + n) {}
  /// How many values the pickle made (flatten's budget scales with it).
  size_t values() const { return arena_.size(); }

  Ref run() {
    for (Op op = read<Op>(); op != Op::STOP; op = read<Op>()) step(op);
    return pop();
  }

 private:
  void step(Op op) {
    switch (op) {
      case Op::PROTO:
        return skip(1);
      case Op::FRAME:
        return skip(8);
      case Op::MARK:
        return marks_.push_back(stack_.size());
      case Op::EMPTY_DICT:
        return push(make(Value::kDict));
      case Op::EMPTY_LIST:
        return push(make(Value::kList));
      case Op::EMPTY_TUPLE:
        return push(make(Value::kTuple));
      case Op::TUPLE:
        return push(make(Value::kTuple, pop_mark()));
      case Op::LIST:
        return push(make(Value::kList, pop_mark()));
      case Op::DICT:
        return push(make(Value::kDict, pop_mark()));
      case Op::TUPLE1:
      case Op::TUPLE2:
      case Op::TUPLE3:
        return push(make(Value::kTuple, pop_n(static_cast<size_t>(op) - static_cast<size_t>(Op::TUPLE1) + 1)));
      case Op::SHORT_BINUNICODE:
      case Op::SHORT_BINSTRING:
      case Op::SHORT_BINBYTES:
        return push_str(read<uint8_t>());
      case Op::BINUNICODE:
      case Op::BINSTRING:
      case Op::BINBYTES:
        return push_str(read<uint32_t>());
      case Op::BINUNICODE8:
        return push_str(read<uint64_t>());
      case Op::BININT:
        return push_int(read<int32_t>(), Value::kInt);
      case Op::BININT1:
        return push_int(read<uint8_t>(), Value::kInt);
      case Op::BININT2:
        return push_int(read<uint16_t>(), Value::kInt);
      case Op::LONG1:
        return push_int(read_long(read<uint8_t>()), Value::kInt);
      case Op::NEWTRUE:
      case Op::NEWFALSE:
        return push_int(op == Op::NEWTRUE, Value::kBool);
      case Op::BINFLOAT:  // the value is never needed
        skip(8);
        return push(make(Value::kFloat));
      case Op::NONE:
        return push(make(Value::kNone));
      case Op::BINPUT:
        memo_[read<uint8_t>()] = top();
        return;
      case Op::LONG_BINPUT:
        memo_[read<uint32_t>()] = top();
        return;
      case Op::MEMOIZE:
        memo_[memo_.size()] = top();
        return;
      case Op::BINGET:
        return push(memo(read<uint8_t>()));
      case Op::LONG_BINGET:
        return push(memo(read<uint32_t>()));
      case Op::GLOBAL: {
        std::string module = read_line();
        return push_global(module + "." + read_line());
      }
      case Op::STACK_GLOBAL: {
        const Ref name = pop(), module = pop();
        if (name->kind != Value::kStr || module->kind != Value::kStr) fail("a STACK_GLOBAL's names are not strings");
        return push_global(module->s + "." + name->s);
      }
      case Op::REDUCE: {
        const Ref args = pop(), fn = pop();
        return push(reduce(*fn, *args));
      }
      case Op::NEWOBJ: {
        const Ref args = pop(), cls = pop();
        return push(make(cls->s == "collections.OrderedDict" ? Value::kDict : Value::kObject));
      }
      case Op::BUILD:  // the state set on an object (an OrderedDict's _metadata) is not needed
        pop();
        return;
      case Op::BINPERSID:
        return push(persistent_load(*pop()));
      case Op::SETITEM:
        return add_items(pop_n(2));
      case Op::APPEND:
        return add_items(pop_n(1));
      case Op::SETITEMS:
      case Op::APPENDS:
        return add_items(pop_mark());
      default:
        throw CheckpointError(c10::str("'", path_, "' uses pickle opcode 0x", std::hex, int(op),
                                       ", which plm's torch.save reader does not support."));
    }
  }

  Ref make(Value::Kind kind, std::vector<Ref> items = {}) {
    arena_.push_back(std::make_unique<Value>());
    Value* v = arena_.back().get();
    v->kind = kind;
    v->items = std::move(items);
    return v;
  }

  [[noreturn]] void fail(const std::string& why) const {
    throw CheckpointError(c10::str("'", path_, "' has a corrupt data.pkl: ", why, "."));
  }
  void skip(size_t n) {
    if (static_cast<size_t>(end_ - p_) < n) fail("it ends in the middle of an instruction");
    p_ += n;
  }
  template <typename T>
  T read() {
    T v;
    const char* at = p_;
    skip(sizeof(T));
    std::memcpy(&v, at, sizeof(T));
    return v;
  }
  std::string read_line() {
    const char* nl = static_cast<const char*>(std::memchr(p_, '\n', end_ - p_));
    if (!nl) fail("a GLOBAL name is not terminated");
    std::string s(p_, nl);
    p_ = nl + 1;
    return s;
  }
  int64_t read_long(uint8_t n) {  // little-endian two's complement
    if (n > 8) fail("an integer has more than 64 bits");
    const auto* b = reinterpret_cast<const uint8_t*>(p_);
    skip(n);
    uint64_t v = n > 0 && n < 8 && (b[n - 1] & 0x80) ? ~uint64_t{0} << (8 * n) : 0;
    for (int k = 0; k < n; ++k) v |= uint64_t{b[k]} << (8 * k);
    return static_cast<int64_t>(v);
  }

  void push(Ref v) { stack_.push_back(std::move(v)); }
  const Ref& top() const {
    if (stack_.size() <= (marks_.empty() ? 0 : marks_.back())) fail("an instruction finds the stack empty");
    return stack_.back();
  }
  Ref pop() { return pop_n(1)[0]; }
  std::vector<Ref> pop_n(size_t n) {
    if (stack_.size() < n + (marks_.empty() ? 0 : marks_.back())) fail("an instruction finds the stack empty");
    std::vector<Ref> items(stack_.end() - n, stack_.end());
    stack_.resize(stack_.size() - n);
    return items;
  }
  std::vector<Ref> pop_mark() {
    if (marks_.empty()) fail("a MARK is missing");
    const size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<Ref> items(stack_.begin() + mark, stack_.end());
    stack_.resize(mark);
    return items;
  }
  void push_str(uint64_t n) {
    const char* at = p_;
    skip(n);
    push(make(Value::kStr));
    stack_.back()->s.assign(at, n);
  }
  void push_int(int64_t i, Value::Kind kind) {
    push(make(kind));
    stack_.back()->i = i;
  }
  void push_global(std::string name) {
    push(make(Value::kGlobal));
    stack_.back()->s = std::move(name);
  }
  const Ref& memo(uint64_t k) const {
    const auto it = memo_.find(k);
    if (it == memo_.end()) fail("a memo entry is read before it is written");
    return it->second;
  }
  // SETITEM(S) into a dict, APPEND(S) to a list; items put into objects we do not know are dropped.
  void add_items(std::vector<Ref> items) {
    Value& target = *top();
    if (target.kind == Value::kDict && items.size() % 2) fail("a dict has a key without a value");
    if (target.kind == Value::kDict || target.kind == Value::kList) {
      target.items.insert(target.items.end(), items.begin(), items.end());
    } else if (target.kind != Value::kObject) {
      fail("items are added to something that is neither a dict nor a list");
    }
  }

  // ('storage', torch.<T>Storage, key, location, numel): one storage, shared by every tensor that names its key.
  Ref persistent_load(const Value& pid) {
    const auto& a = pid.items;
    if (pid.kind != Value::kTuple || a.size() != 5 || a[0]->s != "storage" || a[1]->kind != Value::kGlobal ||
        a[2]->kind != Value::kStr || a[4]->kind != Value::kInt) {
      fail("a persistent id is not ('storage', type, key, location, numel)");
    }
    const std::string type = a[1]->s.substr(a[1]->s.rfind('.') + 1);
    std::optional<at::ScalarType> dtype;
    if (type == "UntypedStorage") dtype = at::kByte;
    for (const auto& d : detail::dtype_names())
      if (type == d.storage) dtype = d.type;
    if (!dtype) {
      throw CheckpointError(c10::str("'", path_, "' holds a storage of type ", a[1]->s, ", which plm does not read."));
    }
    Ref& storage = storages_[a[2]->s];
    if (!storage) {
      storage = make(Value::kStorage);
      storage->s = a[2]->s;
      storage->dtype = *dtype;
      storage->i = a[4]->i;
    } else if (storage->dtype != *dtype) {
      fail(c10::str("storage '", a[2]->s, "' is used with two dtypes"));
    }
    return storage;
  }

  // What calling a pickled global gives, for the globals state dicts use; other objects stay opaque.
  Ref reduce(const Value& fn0, const Value& args0) {
    const Value* fn = &fn0;
    const Value* args = &args0;
    // _rebuild_from_type_v2(func, type, args, state) calls func(*args): followed a few times, never recursively (a
    // pickle can make the call its own argument).
    for (int hops = 0; fn->kind == Value::kGlobal && fn->s == "torch._tensor._rebuild_from_type_v2"; ++hops) {
      if (args->kind != Value::kTuple) fail("a REDUCE's arguments are not a tuple");
      if (args->items.size() < 3) fail("a tensor with attributes is malformed");
      if (hops == 4) fail("tensors with attributes are nested more than 4 deep");
      fn = args->items[0];
      args = args->items[2];
    }
    if (args->kind != Value::kTuple) fail("a REDUCE's arguments are not a tuple");
    const std::string& name = fn->s;
    const auto& a = args->items;
    if (fn->kind != Value::kGlobal) return make(Value::kObject);
    if (name == "collections.OrderedDict" || name == "builtins.dict") return make(Value::kDict);
    if (name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor") {
      // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
      if (a.size() < 4 || a[0]->kind != Value::kStorage || a[1]->kind != Value::kInt) fail("a tensor is malformed");
      auto t = make(Value::kTensor, {a[0]});
      t->i = a[1]->i;
      t->size = ints(*a[2]);
      t->stride = ints(*a[3]);
      if (t->size.size() != t->stride.size()) fail("a tensor's size and stride differ in length");
      return t;
    }
    if (name == "torch._utils._rebuild_parameter" || name == "torch._utils._rebuild_parameter_with_state") {
      if (a.empty()) fail("a parameter has no data");  // (data, requires_grad, backward_hooks[, state])
      return a[0];
    }
    if (name.rfind("torch.", 0) == 0 && name.find("_rebuild") != std::string::npos) {
      throw CheckpointError(c10::str("'", path_, "' holds a tensor rebuilt by ", name,
                                     " (quantized, sparse or another kind plm does not read)."));
    }
    return make(Value::kObject);
  }
  std::vector<int64_t> ints(const Value& tuple) const {
    if (tuple.kind != Value::kTuple) fail("a tensor's size or stride is not a tuple");
    if (tuple.items.size() > 64) fail("a tensor has more than 64 dimensions");
    std::vector<int64_t> out;
    for (const Ref& v : tuple.items) {
      if (v->kind != Value::kInt) fail("a tensor's size or stride is not integers");
      out.push_back(v->i);
    }
    return out;
  }

  std::string path_;
  const char* p_;
  const char* end_;
  std::vector<Ref> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Ref> memo_;
  std::unordered_map<std::string, Ref> storages_;
  std::vector<std::unique_ptr<Value>> arena_;
};

// Nested dicts deeper than this are refused (a pickle can make a dict contain itself).
constexpr int kMaxDepth = 100;

// Whether a dict holds a tensor, directly or in nested dicts; each dict is looked into once (`seen`), so a pickle
// whose dicts share children (the memo makes a DAG, or a cycle) costs linear time.
bool holds_tensors(const Value& dict, std::unordered_map<const Value*, bool>& seen, int depth = 0) {
  if (const auto it = seen.find(&dict); it != seen.end()) return it->second;
  seen[&dict] = false;  // a cycle back here adds nothing
  bool found = false;
  for (size_t k = 1; k < dict.items.size() && depth < kMaxDepth && !found; k += 2) {
    const Value& v = *dict.items[k];
    found = v.kind == Value::kTensor || (v.kind == Value::kDict && holds_tensors(v, seen, depth + 1));
  }
  return seen[&dict] = found;
}

// {"model": sd, "step": 3, "args": {...}} -> sd (also "state_dict", "weights"): the only entry with tensors.
const Value& unwrap(const Value& root) {
  const Value* inner = nullptr;
  int with_tensors = 0;
  std::unordered_map<const Value*, bool> seen;
  for (size_t k = 0; k + 1 < root.items.size(); k += 2) {
    const Value& key = *root.items[k];
    const Value& value = *root.items[k + 1];
    const bool dict = value.kind == Value::kDict && holds_tensors(value, seen);
    with_tensors += dict || value.kind == Value::kTensor;
    if (dict && key.kind == Value::kStr && (key.s == "model" || key.s == "state_dict" || key.s == "weights")) {
      inner = &value;
    }
  }
  return with_tensors == 1 && inner ? *inner : root;
}

// The tensors of nested dicts under '.'-joined names (string or integer keys); other values are skipped. A dict
// reached twice (shared by two keys) is flattened under both names, but the entries visited in all may not exceed
// `budget` (a pickle of n values can otherwise name 2^n paths).
void flatten(const Value& dict, const std::string& prefix, const std::string& path,
             std::vector<std::pair<std::string, const Value*>>& out, size_t& budget, int depth = 0) {
  if (depth > kMaxDepth) throw CheckpointError(c10::str("'", path, "' nests dicts more than ", kMaxDepth, " deep."));
  if (dict.items.size() / 2 > budget)
    throw CheckpointError(c10::str("'", path, "' has dicts that share entries into more names than the file has ",
                                   "values (a cycle or a blow-up of shared dicts)."));
  budget -= dict.items.size() / 2;
  for (size_t k = 0; k + 1 < dict.items.size(); k += 2) {
    const Value& key = *dict.items[k];
    const Value& value = *dict.items[k + 1];
    if (key.kind != Value::kStr && key.kind != Value::kInt) continue;
    const std::string name = prefix + (key.kind == Value::kStr ? key.s : std::to_string(key.i));
    if (value.kind == Value::kTensor) out.emplace_back(name, &value);
    if (value.kind == Value::kDict) flatten(value, name + ".", path, out, budget, depth + 1);
  }
}

// c10 errors carry a backtrace and advice: keep their first sentence.
std::string first_sentence(const c10::Error& e) {
  const std::string s = e.what_without_backtrace();
  const size_t dot = s.find(". ");
  return dot == std::string::npos ? s.substr(0, s.find('\n')) : s.substr(0, dot);
}

// Refuses, with one sentence each, files that are not zips.
void check_zip_signature(const detail::MappedFile& file) {
  const char* magic = file.data();
  if (file.size() >= 4 && std::memcmp(magic, "PK\x03\x04", 4) == 0) return;
  if (file.size() >= 1 && static_cast<Op>(magic[0]) == Op::PROTO) {
    throw CheckpointError(c10::str("'", file.path(), "' is in PyTorch's legacy (pre-1.6, non-zip) format, which plm ",
                                   "does not read; re-save it with torch.save from a current PyTorch."));
  }
  throw CheckpointError(
      c10::str("'", file.path(), "' is not a PyTorch checkpoint: it does not start with a zip header."));
}

// The storage record data/<key>: a view of the mapped file where the record is stored uncompressed (as
// torch.save writes it, 64-byte aligned), else a copy.
at::Storage read_storage(caffe2::serialize::PyTorchStreamReader& zip, const detail::MappedFile& file, const Value& s,
                         const std::string& where) {
  const std::string record = "data/" + s.s;
  if (!zip.hasRecord(record)) throw CheckpointError(c10::str(where, " has no record ", record, "."));
  const size_t nbytes = zip.getRecordSize(record);
  if (s.i < 0 || nbytes != static_cast<uint64_t>(s.i) * at::elementSize(s.dtype)) {
    throw CheckpointError(
        c10::str(where, " has a record ", record, " of ", nbytes, " bytes for ", s.i, " ", s.dtype, " elements."));
  }
  const auto options = at::TensorOptions().dtype(s.dtype);
  if (nbytes == 0) return at::empty({0}, options).storage();
  const uint64_t header = zip.getRecordHeaderOffset(record);  // a zip local header: method at bytes 8-9
  if (header + 30 <= file.size() && file.data()[header + 8] == 0 && file.data()[header + 9] == 0) {
    const uint64_t offset = zip.getRecordOffset(record);
    if (offset + nbytes <= file.size()) return file.tensor(offset, {s.i}, s.dtype).storage();
  }
  at::Tensor flat = at::empty({s.i}, options);
  if (zip.getRecord(record, flat.data_ptr(), nbytes) != nbytes) {
    throw CheckpointError(c10::str(where, " has a record ", record, " that ends early."));
  }
  return flat.storage();
}

// The tensor `ref` describes, as a view of `storage`, after checking it stays inside.
at::Tensor view_of(const at::Storage& storage, const Value& ref, const std::string& where) {
  const Value& s = *ref.items[0];
  int64_t last = ref.i;  // the highest element the view reaches, -1 if it is empty
  for (size_t d = 0; d < ref.size.size(); ++d) {
    if (ref.size[d] < 0 || ref.stride[d] < 0) throw CheckpointError(where + " has a negative size or stride.");
    last = ref.size[d] == 0 || last < 0 ? -1 : last + (ref.size[d] - 1) * ref.stride[d];
  }
  if (ref.i < 0 || ref.i > s.i || last >= s.i) {
    throw CheckpointError(c10::str(where, " reaches beyond its storage of ", s.i, " elements."));
  }
  return at::empty({0}, at::TensorOptions().dtype(s.dtype)).set_(storage, ref.i, ref.size, ref.stride);
}

}  // namespace

TensorMap load_torch_state_dict(const std::string& path) {
  const detail::MappedFile file(path);
  check_zip_signature(file);
  try {
    caffe2::serialize::PyTorchStreamReader zip(path);
    if (!zip.hasRecord("data.pkl")) {
      throw CheckpointError(c10::str("'", path, "' is a zip but not a torch.save file: it has no data.pkl."));
    }
    if (zip.hasRecord("byteorder")) {
      const auto [data, n] = zip.getRecord("byteorder");
      if (std::string(static_cast<const char*>(data.get()), n) != "little") {
        throw CheckpointError(c10::str("'", path, "' was saved on a big-endian machine, which plm does not read."));
      }
    }
    const auto [pkl, pkl_size] = zip.getRecord("data.pkl");
    Unpickler unpickler(path, static_cast<const char*>(pkl.get()), pkl_size);
    const Ref root = unpickler.run();
    if (root->kind != Value::kDict) {
      throw CheckpointError(c10::str("'", path, "' does not hold a dict of tensors at the top level."));
    }
    std::vector<std::pair<std::string, const Value*>> refs;
    size_t budget = 4 * unpickler.values() + 1024;
    flatten(unwrap(*root), "", path, refs, budget);

    std::unordered_map<std::string, at::Storage> storages;  // record key -> storage, each read once
    TensorMap out;
    for (const auto& [name, ref] : refs) {
      const std::string where = c10::str("tensor '", name, "' in '", path, "'");
      at::Storage& storage = storages[ref->items[0]->s];
      if (!storage) storage = read_storage(zip, file, *ref->items[0], where);
      if (!out.insert(name, view_of(storage, *ref, where))) {
        throw CheckpointError(where + " appears twice once nested dicts are flattened.");
      }
    }
    return out;
  } catch (const c10::Error& e) {
    throw CheckpointError(c10::str("'", path, "' is not a readable torch.save zip: ", first_sentence(e), "."));
  }
}

namespace {

// A protocol-2 pickle of an OrderedDict of tensors, in the form torch.save writes (see pickletools.dis).
struct Pickler {
  std::string out;

  void op(Op o) { out.push_back(static_cast<char>(o)); }
  template <typename T>
  void raw(T v) {
    out.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  void str(const std::string& s) {
    op(Op::BINUNICODE);
    raw(static_cast<uint32_t>(s.size()));
    out += s;
  }
  void global(const char* module, const char* name) {
    op(Op::GLOBAL);
    out += c10::str(module, '\n', name, '\n');
  }
  void integer(int64_t v) {
    if (v >= 0 && v < 256) {
      op(Op::BININT1);
      raw(static_cast<uint8_t>(v));
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      op(Op::BININT);
      raw(static_cast<int32_t>(v));
    } else {
      op(Op::LONG1);
      raw(uint8_t{8});
      raw(v);
    }
  }
  void ints(c10::IntArrayRef v) {
    op(Op::MARK);
    for (int64_t x : v) integer(x);
    op(Op::TUPLE);
  }
  void empty_ordered_dict() {
    global("collections", "OrderedDict");
    op(Op::EMPTY_TUPLE);
    op(Op::REDUCE);
  }
  // _rebuild_tensor_v2(('storage', torch.<T>Storage, key, 'cpu', numel), offset, size, stride, False, {})
  void tensor(const char* storage_type, size_t key, int64_t storage_numel, int64_t offset, c10::IntArrayRef size,
              c10::IntArrayRef stride) {
    global("torch._utils", "_rebuild_tensor_v2");
    op(Op::MARK);
    op(Op::MARK);
    str("storage");
    global("torch", storage_type);
    str(std::to_string(key));
    str("cpu");
    integer(storage_numel);
    op(Op::TUPLE);
    op(Op::BINPERSID);
    integer(offset);
    ints(size);
    ints(stride);
    op(Op::NEWFALSE);      // requires_grad
    empty_ordered_dict();  // backward hooks
    op(Op::TUPLE);
    op(Op::REDUCE);
  }
};

}  // namespace

void save_torch_state_dict(const TensorMap& tensors, const std::string& path) {
  // One record per storage: a CPU tensor's whole storage (written once however many tensors view it, as
  // torch.save does), or a contiguous CPU copy of a tensor on another device, made when it is written.
  std::vector<at::Tensor> records;
  std::unordered_map<const void*, size_t> record_of;  // CPU StorageImpl -> record
  Pickler pk;
  pk.op(Op::PROTO);
  pk.raw(uint8_t{2});
  pk.empty_ordered_dict();
  pk.op(Op::MARK);
  for (const auto& [name, t] : tensors) {
    const char* type = detail::writable_dtype(path, name, t).storage;
    pk.str(name);
    if (!t.is_cpu()) {
      records.push_back(t);
      pk.tensor(type, records.size() - 1, t.numel(), 0, t.sizes(), c10::contiguous_strides(t.sizes()));
      continue;
    }
    const auto [it, fresh] = record_of.emplace(t.storage().unsafeGetStorageImpl(), records.size());
    if (fresh) records.push_back(t);
    if (records[it->second].scalar_type() != t.scalar_type()) {
      throw CheckpointError(c10::str("cannot write tensor '", name, "' to '", path,
                                     "': it shares its storage with a tensor of another dtype."));
    }
    pk.tensor(type, it->second, t.storage().nbytes() / t.element_size(), t.storage_offset(), t.sizes(), t.strides());
  }
  pk.op(Op::SETITEMS);
  pk.op(Op::STOP);

  detail::AtomicFile file(path);
  // A failed write is kept here and rethrown after the zip call: the zip writer must never see a short write,
  // or its destructor would try to finish the archive and throw a second time.
  std::exception_ptr error;
  const auto sink = [&](const void* data, size_t n) -> size_t {
    try {
      if (!error) file.write(data, n);
    } catch (...) {
      error = std::current_exception();
    }
    return n;
  };
  const auto write = [&](caffe2::serialize::PyTorchStreamWriter& zip, const std::string& name, const void* data,
                         size_t n) {
    zip.writeRecord(name, data, n);
    if (error) std::rethrow_exception(error);
  };
  try {
    caffe2::serialize::PyTorchStreamWriter zip(sink);
    write(zip, "data.pkl", pk.out.data(), pk.out.size());
    write(zip, ".format_version", "1", 1);
    write(zip, ".storage_alignment", "64", 2);
    write(zip, "byteorder", "little", 6);
    for (size_t k = 0; k < records.size(); ++k) {
      const at::Tensor& t = records[k];
      if (t.is_cpu()) {
        write(zip, "data/" + std::to_string(k), t.storage().data(), t.storage().nbytes());
      } else {
        const at::Tensor copy = t.to(at::kCPU).contiguous();
        write(zip, "data/" + std::to_string(k), copy.data_ptr(), copy.numel() * copy.element_size());
      }
    }
    zip.writeEndOfFile();
    if (error) std::rethrow_exception(error);
  } catch (const c10::Error& e) {
    throw CheckpointError(c10::str("cannot write '", path, "': ", first_sentence(e), "."));
  }
  file.commit();
}

}  // namespace plm::ckpt
