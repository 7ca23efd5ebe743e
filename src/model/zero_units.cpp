// Parameter units, the granularity of sharded training (ZeRO, train/zero.hpp): which unit
// a parameter belongs to, a unit's specs packed into its own block, and the model's views
// of a unit's block as a ParamSource hands it over.
#include "model/zero_units.hpp"

#include "model/model.hpp"

namespace seqpar {

int param_unit(const ParamSpec& s) {
  const std::string& n = s.name;
  const size_t at = n.rfind("layers.", 0) == 0 ? 7 : n.rfind("model.layers.", 0) == 0 ? 13 : 0;
  if (at == 0) return 0;  // embedding, head, final norm
  return 1 + std::stoi(n.substr(at, n.find('.', at) - at));
}

std::vector<ParamSpec> unit_specs(const std::vector<ParamSpec>& specs, int u) {
  std::vector<ParamSpec> out;
  int64_t off = 0;
  for (const ParamSpec& s : specs)
    if (param_unit(s) == u) {
      out.push_back(s);
      out.back().offset = off;
      off += s.numel;
    }
  return out;
}

void Model::set_unit_views(ParamViews& v, int u, float* block) const {
  const ParamViews w = param_views(unit_specs_[u], cfg_.n_layer, block);
  if (u == 0) {
    v.wte = w.wte;
    v.head = w.head;
    v.lnf_w = w.lnf_w;
    v.lnf_b = w.lnf_b;
  } else {
    v.layers[u - 1] = w.layers[u - 1];
  }
}

}  // namespace seqpar
