#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <queue>
#include <string>
#include <utility>
#include <vector>

#include "agglomerative.h"
#include "checks.h"
#include "interrupt.h"

namespace pst {
namespace {

constexpr int64_t kMinCompaction = 4096;  // stale heap entries worth a compaction at the least
constexpr int64_t kMergesPerCheck = 4096;  // merges (single linkage: edges) between two looks at the interrupt flag

struct Edge {
  double v;
  int64_t a, b;  // a > b
  bool operator>(const Edge& o) const {
    if (v != o.v) return v > o.v;
    if (a != o.a) return a > o.a;
    return b > o.b;
  }
};

struct Neighbour {
  int64_t c;
  double v;
};

// Unique undirected edges (a > b) of the CSR graph, self-loops dropped, sorted by (a, b).
std::vector<std::pair<int64_t, int64_t>> undirected_edges(const int64_t* rp, const int64_t* col, int64_t n) {
  std::vector<std::pair<int64_t, int64_t>> e;
  e.reserve(rp[n]);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t p = rp[i]; p < rp[i + 1]; ++p) {
      const int64_t j = col[p];
      if (j != i) e.emplace_back(std::max(i, j), std::min(i, j));
    }
  std::sort(e.begin(), e.end());
  e.erase(std::unique(e.begin(), e.end()), e.end());
  return e;
}

struct UnionFind {
  std::vector<int64_t> p;
  explicit UnionFind(int64_t n) : p(n) { std::iota(p.begin(), p.end(), 0); }
  int64_t find(int64_t i) {
    while (p[i] != i) {
      p[i] = p[p[i]];
      i = p[i];
    }
    return i;
  }
};

// Kruskal: merges along the edges by increasing Euclidean distance.
void single_tree(const double* x, int64_t n, int64_t d, const std::vector<std::pair<int64_t, int64_t>>& edges,
                 int64_t max_merges, std::vector<int64_t>& children, std::vector<double>& dist,
                 const Interrupt& stop) {
  std::vector<Edge> e(edges.size());
  for (size_t t = 0; t < edges.size(); ++t) {
    const auto [a, b] = edges[t];
    double s = 0;
    for (int64_t j = 0; j < d; ++j) {
      const double diff = x[a * d + j] - x[b * d + j];
      s += diff * diff;
    }
    e[t] = {std::sqrt(s), a, b};
  }
  std::sort(e.begin(), e.end(), [](const Edge& l, const Edge& r) { return r > l; });
  UnionFind uf(n);
  std::vector<int64_t> node(n);  // cluster id of the set whose root is r
  std::iota(node.begin(), node.end(), 0);
  int64_t m = 0;
  for (size_t t = 0; t < e.size(); ++t) {
    if (m >= max_merges) break;
    if (t % kMergesPerCheck == 0) stop.check();
    const Edge& ed = e[t];
    const int64_t ra = uf.find(ed.a), rb = uf.find(ed.b);
    if (ra == rb) continue;
    children.push_back(std::min(node[ra], node[rb]));
    children.push_back(std::max(node[ra], node[rb]));
    dist.push_back(ed.v);
    uf.p[rb] = ra;
    node[ra] = n + m;
    ++m;
  }
}

// Heap-based merging with lazily invalidated entries (scikit-learn's ward_tree / linkage_tree
// with connectivity): adj[c] holds (neighbour id, linkage value) entries, stale ones (neighbour
// merged since) skipped by the `active` test.
void heap_tree(const double* x, int64_t n, int64_t d, const std::vector<std::pair<int64_t, int64_t>>& edges,
               Linkage linkage, int64_t max_merges, std::vector<int64_t>& children, std::vector<double>& dist,
               const Interrupt& stop) {
  const int64_t n_nodes = n + max_merges;
  const bool ward = linkage == Linkage::kWard;
  std::vector<double> size(n_nodes, 0.0);
  std::vector<double> moment;  // ward: sum of the points of each cluster [n_nodes, d]
  std::vector<double> mean;    // ward: moment / size, once per cluster [n_nodes, d]
  std::fill(size.begin(), size.begin() + n, 1.0);
  if (ward) {
    moment.assign(n_nodes * d, 0.0);
    std::copy(x, x + n * d, moment.begin());
    mean.assign(n_nodes * d, 0.0);
    std::copy(x, x + n * d, mean.begin());  // a point's cluster: size 1, mean = the point
  }
  // scikit-learn's compute_ward_dist, in its order of operations (its moment / size divisions
  // are the ones stored in `mean`)
  auto ward_value = [&](int64_t a, int64_t b) {
    const double na = size[a], nb = size[b];
    const double f = (na * nb) / (na + nb);
    double pa = 0;
    for (int64_t j = 0; j < d; ++j) {
      const double diff = mean[a * d + j] - mean[b * d + j];
      pa += diff * diff;
    }
    return pa * f;
  };
  auto euclid = [&](int64_t a, int64_t b) {
    double s = 0;
    for (int64_t j = 0; j < d; ++j) {
      const double diff = x[a * d + j] - x[b * d + j];
      s += diff * diff;
    }
    return std::sqrt(s);
  };

  std::vector<std::vector<Neighbour>> adj(n_nodes);
  std::vector<Edge> init(edges.size());
  {
    std::vector<int64_t> deg(n, 0);
    for (const auto& [a, b] : edges) ++deg[a], ++deg[b];
    for (int64_t i = 0; i < n; ++i) adj[i].reserve(deg[i]);
  }
  for (size_t t = 0; t < edges.size(); ++t) {
    const auto [a, b] = edges[t];
    const double v = ward ? ward_value(a, b) : euclid(a, b);
    adj[a].push_back({b, v});
    adj[b].push_back({a, v});
    init[t] = {v, a, b};
  }
  // min-heap of (value, a, b); entries whose clusters merged since stay until popped, or until
  // they outnumber the live ones and a compaction drops them (the live entries, and so the
  // order of the merges, are the same either way)
  std::vector<Edge> heap = std::move(init);
  const std::greater<Edge> later;
  std::make_heap(heap.begin(), heap.end(), later);
  int64_t live = static_cast<int64_t>(heap.size());  // entries whose two clusters are active

  std::vector<char> active(n_nodes, 0);
  std::fill(active.begin(), active.begin() + n, 1);
  std::vector<int64_t> slot(n_nodes, -1);
  std::vector<Neighbour> merged;
  for (int64_t k = n; k < n_nodes; ++k) {
    if ((k - n) % kMergesPerCheck == 0) stop.check();
    Edge top{};
    bool found = false;
    while (!heap.empty()) {
      top = heap.front();
      std::pop_heap(heap.begin(), heap.end(), later);
      heap.pop_back();
      if (active[top.a] && active[top.b]) {
        found = true;
        break;
      }
    }
    if (!found) break;  // the remaining clusters share no edge
    const int64_t a = top.a, b = top.b;
    children.push_back(b);
    children.push_back(a);
    dist.push_back(ward ? std::sqrt(2.0 * top.v) : top.v);
    active[a] = active[b] = 0;
    const double na = size[a], nb = size[b];
    size[k] = na + nb;
    if (ward)
      for (int64_t j = 0; j < d; ++j) {
        moment[k * d + j] = moment[a * d + j] + moment[b * d + j];
        mean[k * d + j] = moment[k * d + j] / size[k];
      }

    // neighbours of the new cluster: the active neighbours of a, then of b
    merged.clear();
    live -= 1;  // the entry (a, b) just popped
    for (const auto& e : adj[a]) {
      if (!active[e.c]) continue;
      --live;  // (a, c) goes stale
      slot[e.c] = static_cast<int64_t>(merged.size());
      merged.push_back(e);
    }
    for (const auto& e : adj[b]) {
      if (!active[e.c]) continue;
      --live;  // (b, c) goes stale
      const int64_t s = slot[e.c];
      if (s < 0) {
        slot[e.c] = static_cast<int64_t>(merged.size());
        merged.push_back(e);
      } else if (linkage == Linkage::kAverage) {
        merged[s].v = (na * merged[s].v + nb * e.v) / (na + nb);
      } else if (linkage == Linkage::kComplete) {
        merged[s].v = std::fmax(merged[s].v, e.v);
      }
    }
    for (auto& e : merged) {
      slot[e.c] = -1;
      if (ward) e.v = ward_value(k, e.c);
      adj[e.c].push_back({k, e.v});
      heap.push_back({e.v, k, e.c});
      std::push_heap(heap.begin(), heap.end(), later);
    }
    live += static_cast<int64_t>(merged.size());
    adj[k] = merged;
    std::vector<Neighbour>().swap(adj[a]);
    std::vector<Neighbour>().swap(adj[b]);
    active[k] = 1;
    if (static_cast<int64_t>(heap.size()) > 2 * live + kMinCompaction) {
      std::erase_if(heap, [&](const Edge& e) { return !active[e.a] || !active[e.b]; });
      std::make_heap(heap.begin(), heap.end(), later);
    }
  }
}

std::tuple<at::Tensor, at::Tensor> agglomerative_tree_cpu(const at::Tensor& x, const at::Tensor& rowptr,
                                                          const at::Tensor& col, c10::string_view linkage_name,
                                                          int64_t n_clusters) {
  const Linkage linkage = check_agglomerative_tree_args(x, rowptr, col, linkage_name, n_clusters);
  const int64_t n = x.size(0), d = x.size(1);
  check_finite_cpu(x, "x");
  check_offsets_cpu(rowptr, col.size(0), "rowptr", "col entries");
  const Interrupt stop;
  stop.check();

  auto xd = x.to(at::kDouble).contiguous();
  auto rp = rowptr.contiguous();
  auto cl = col.contiguous();
  const int64_t* prp = rp.data_ptr<int64_t>();
  const int64_t* pcl = cl.data_ptr<int64_t>();
  for (int64_t p = 0; p < cl.size(0); ++p)
    TORCH_CHECK(pcl[p] >= 0 && pcl[p] < n, "col should hold point indices in [0, ", n, "), got ", pcl[p],
                " at position ", p);

  const auto edges = undirected_edges(prp, pcl, n);
  const int64_t max_merges = std::max<int64_t>(0, n - n_clusters);
  std::vector<int64_t> children;
  std::vector<double> dist;
  children.reserve(2 * max_merges);
  dist.reserve(max_merges);
  if (linkage == Linkage::kSingle)
    single_tree(xd.data_ptr<double>(), n, d, edges, max_merges, children, dist, stop);
  else
    heap_tree(xd.data_ptr<double>(), n, d, edges, linkage, max_merges, children, dist, stop);

  const int64_t m = static_cast<int64_t>(dist.size());
  auto out_children = at::empty({m, 2}, x.options().dtype(at::kLong));
  auto out_dist = at::empty({m}, x.options().dtype(at::kDouble));
  std::copy(children.begin(), children.end(), out_children.data_ptr<int64_t>());
  std::copy(dist.begin(), dist.end(), out_dist.data_ptr<double>());
  return {out_children, out_dist};
}

at::Tensor agglomerative_labels_cpu(const at::Tensor& children, int64_t n_samples, int64_t n_merges) {
  check_agglomerative_labels_args(children, n_samples, n_merges);
  // the output first: an n_samples too large for memory fails here, with torch's allocator error
  auto labels = at::empty({n_samples}, children.options());
  auto ch = children.contiguous();
  const int64_t* pc = ch.data_ptr<int64_t>();
  const int64_t n_nodes = n_samples + n_merges;
  std::vector<int64_t> parent(n_nodes);
  std::iota(parent.begin(), parent.end(), 0);
  for (int64_t m = 0; m < n_merges; ++m) {
    for (int s = 0; s < 2; ++s) {
      const int64_t c = pc[2 * m + s];
      TORCH_CHECK(c >= 0 && c < n_samples + m && parent[c] == c, "children[", m, "] = (", pc[2 * m], ", ",
                  pc[2 * m + 1], ") should name two clusters that exist, unmerged, before merge ", m);
      parent[c] = n_samples + m;
    }
  }
  int64_t* pl = labels.data_ptr<int64_t>();
  std::vector<int64_t> label_of(n_nodes, -1);
  int64_t next = 0;
  for (int64_t i = 0; i < n_samples; ++i) {
    int64_t r = i;
    while (parent[r] != r) r = parent[r];
    for (int64_t c = i; parent[c] != c;) {  // path compression
      const int64_t up = parent[c];
      parent[c] = r;
      c = up;
    }
    if (label_of[r] < 0) label_of[r] = next++;
    pl[i] = label_of[r];
  }
  return labels;
}

}  // namespace

TORCH_LIBRARY_IMPL(pst, CPU, m) {
  m.impl("agglomerative_tree", &agglomerative_tree_cpu);
  m.impl("agglomerative_labels", &agglomerative_labels_cpu);
}

}  // namespace pst
