// CPU kernel of morph_refine (semantics in csrc/morph_refine.cpp).
//
// 1. One pass over each image (rows in parallel, one hash look-up per run of equal ids)
//    finds the instances and their bounding boxes.
// 2. Each instance is refined on its own in a crop: its bounding box grown by
//    max(open_radius, 2 * close_radius), clipped to the image. Inside that margin the crop
//    edges act like the image border: opening never leaves the box, and the closing only
//    reads pixels within 2 * close_radius of it. Crop edges are also "outside" for hole
//    filling, since every background pixel outside an instance's bounding box (or on its
//    edge row / column) reaches the image border along a straight line. Instances run in
//    parallel, largest first.
// 3. The refined crops are pasted back, rows in parallel: first every pixel that its own
//    instance keeps, then the remaining pixels of each crop in ascending id order, each
//    taken only while still free (the lowest id wins).
//
// Erosion and dilation with a square or disk of radius r cost O(area) and O(area * r):
// per row the horizontal distance to the nearest pixel of interest, then a sliding column
// count (square) or one comparison per disk row (disk: row dy has half-width
// floor(sqrt(r^2 - dy^2))).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <unordered_map>
#include <vector>

#include "checks.h"
#include "morph_refine.h"
#include "cpu/ccl_runs.h"
#include "cpu/parallel.h"

namespace pst {
namespace {

using cpu::Run;
using cpu::RunLabels;

constexpr int32_t kFar = std::numeric_limits<int32_t>::max() / 4;

struct Params {
  int64_t open_r, close_r;
  bool disk, fill_holes;
  int64_t min_size;
  bool largest;
  bool conn8;
};

struct Box {
  int64_t y0, y1, x0, x1;  // inclusive bounds
};

struct Item {
  int64_t b, id;
  int64_t y0, y1, x0, x1;  // crop, half-open
  std::vector<uint8_t> mask;  // refined mask in the crop, row-major
};

// Half-widths of the disk's rows: wd[k] = floor(sqrt(r^2 - k^2)), k = 0..r.
std::vector<int32_t> disk_half_widths(int64_t r) {
  std::vector<int32_t> wd(r + 1);
  for (int64_t k = 0; k <= r; ++k) {
    const int64_t v = r * r - k * k;
    int64_t s = static_cast<int64_t>(std::sqrt(static_cast<double>(v)));
    while (s * s > v) --s;
    while ((s + 1) * (s + 1) <= v) ++s;
    wd[k] = static_cast<int32_t>(s);
  }
  return wd;
}

struct Scratch {
  std::vector<uint8_t> a, b, hrow;
  std::vector<int32_t> dist, cnt;
  std::vector<uint8_t> row_has;
  RunLabels labels;
  std::vector<int64_t> area;
  std::vector<uint8_t> flag;
};

// out[p] = (some q in (p + S) inside the h x w crop has in[q] == target) XOR invert.
// With target 1 and no inversion this is a dilation; with target 0 and inversion an erosion
// (pixels outside the crop never count, like OpenCV's default border).
void hits(const uint8_t* in, uint8_t* out, int64_t h, int64_t w, int64_t r, bool disk, const std::vector<int32_t>& wd,
          uint8_t target, bool invert, Scratch& s) {
  const int64_t n = h * w;
  s.dist.resize(n);
  s.row_has.assign(h, 0);
  int32_t* dist = s.dist.data();
  // horizontal distance to the nearest target pixel of the same row (kFar if none)
  for (int64_t y = 0; y < h; ++y) {
    const uint8_t* row = in + y * w;
    int32_t* d = dist + y * w;
    int32_t last = -kFar;
    bool any = false;
    for (int64_t x = 0; x < w; ++x) {
      if (row[x] == target) {
        last = static_cast<int32_t>(x);
        any = true;
      }
      d[x] = static_cast<int32_t>(x) - last;
    }
    s.row_has[y] = any;
    if (!any) continue;
    int32_t next = kFar + static_cast<int32_t>(w);
    for (int64_t x = w - 1; x >= 0; --x) {
      if (row[x] == target) next = static_cast<int32_t>(x);
      d[x] = std::min(d[x], next - static_cast<int32_t>(x));
    }
  }
  const uint8_t inv = invert ? 1 : 0;
  if (!disk) {
    const int32_t rr = static_cast<int32_t>(std::min<int64_t>(r, kFar - 1));
    s.hrow.resize(n);
    uint8_t* hr = s.hrow.data();
    for (int64_t i = 0; i < n; ++i) hr[i] = dist[i] <= rr;
    // sliding count over the column window [y - r, y + r]
    s.cnt.assign(w, 0);
    int32_t* cnt = s.cnt.data();
    const int64_t first = std::min(r, h - 1);
    for (int64_t y = 0; y <= first; ++y)
      if (s.row_has[y])
        for (int64_t x = 0; x < w; ++x) cnt[x] += hr[y * w + x];
    for (int64_t y = 0; y < h; ++y) {
      uint8_t* o = out + y * w;
      for (int64_t x = 0; x < w; ++x) o[x] = static_cast<uint8_t>((cnt[x] > 0) ^ inv);
      const int64_t add = y + r + 1, sub = y - r;
      if (add < h && s.row_has[add])
        for (int64_t x = 0; x < w; ++x) cnt[x] += hr[add * w + x];
      if (sub >= 0 && s.row_has[sub])
        for (int64_t x = 0; x < w; ++x) cnt[x] -= hr[sub * w + x];
    }
    return;
  }
  for (int64_t y = 0; y < h; ++y) {
    uint8_t* o = out + y * w;
    std::memset(o, 0, w);
    const int64_t lo = std::max<int64_t>(0, y - r), hi = std::min<int64_t>(h - 1, y + r);
    for (int64_t yy = lo; yy <= hi; ++yy) {
      if (!s.row_has[yy]) continue;
      const int32_t t = wd[std::abs(yy - y)];
      const int32_t* d = dist + yy * w;
      for (int64_t x = 0; x < w; ++x) o[x] |= static_cast<uint8_t>(d[x] <= t);
    }
    if (inv)
      for (int64_t x = 0; x < w; ++x) o[x] ^= 1;
  }
}

bool any_set(const std::vector<uint8_t>& v, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (v[i]) return true;
  return false;
}

// Runs the pipeline on the crop mask s.a (h x w, values 0/1); the result is left in s.a.
void refine_crop(int64_t h, int64_t w, const Params& p, const std::vector<int32_t>& wd_open,
                 const std::vector<int32_t>& wd_close, Scratch& s) {
  const int64_t n = h * w;
  s.b.resize(n);
  if (p.open_r > 0) {
    hits(s.a.data(), s.b.data(), h, w, p.open_r, p.disk, wd_open, 0, true, s);   // erode
    if (!any_set(s.b, n)) {
      std::fill(s.a.begin(), s.a.begin() + n, 0);
      return;
    }
    hits(s.b.data(), s.a.data(), h, w, p.open_r, p.disk, wd_open, 1, false, s);  // dilate
  }
  if (p.close_r > 0) {
    hits(s.a.data(), s.b.data(), h, w, p.close_r, p.disk, wd_close, 1, false, s);  // dilate
    hits(s.b.data(), s.a.data(), h, w, p.close_r, p.disk, wd_close, 0, true, s);   // erode
  }
  if (p.fill_holes) {
    // background components (complementary connectivity) that do not reach the crop edge
    s.labels.label(s.a.data(), h, w, 0, !p.conn8);
    const auto& runs = s.labels.runs;
    const auto& rs = s.labels.row_start;
    const auto& root = s.labels.root;
    const int64_t nr = static_cast<int64_t>(runs.size());
    s.flag.assign(nr, 0);
    for (int64_t y = 0; y < h; ++y)
      for (int64_t k = rs[y]; k < rs[y + 1]; ++k)
        if (y == 0 || y == h - 1 || runs[k].x0 == 0 || runs[k].x1 == w) s.flag[root[k]] = 1;
    for (int64_t y = 0; y < h; ++y)
      for (int64_t k = rs[y]; k < rs[y + 1]; ++k)
        if (!s.flag[root[k]]) std::fill(s.a.data() + y * w + runs[k].x0, s.a.data() + y * w + runs[k].x1, 1);
  }
  if (p.min_size > 0 || p.largest) {
    s.labels.label(s.a.data(), h, w, 1, p.conn8);
    const auto& runs = s.labels.runs;
    const auto& rs = s.labels.row_start;
    const auto& root = s.labels.root;
    const int64_t nr = static_cast<int64_t>(runs.size());
    s.area.assign(nr, 0);
    for (int64_t k = 0; k < nr; ++k) s.area[root[k]] += runs[k].x1 - runs[k].x0;
    s.flag.assign(nr, 0);  // 1 = keep (on roots)
    int64_t best = -1;
    for (int64_t k = 0; k < nr; ++k) {
      if (root[k] != k || s.area[k] < p.min_size) continue;
      s.flag[k] = 1;
      if (best < 0 || s.area[k] > s.area[best]) best = k;
    }
    if (p.largest)
      for (int64_t k = 0; k < nr; ++k) s.flag[k] = k == best;
    for (int64_t y = 0; y < h; ++y)
      for (int64_t k = rs[y]; k < rs[y + 1]; ++k)
        if (!s.flag[root[k]]) std::fill(s.a.data() + y * w + runs[k].x0, s.a.data() + y * w + runs[k].x1, 0);
  }
}

// The instances of every image and their bounding boxes, sorted by id: rows split into
// tasks (each inside one image) that run in one parallel region, one hash look-up per run
// of equal ids, then merged per image.
template <typename T>
std::vector<std::vector<std::pair<int64_t, Box>>> find_instances(const T* pin, int64_t bsz, int64_t h, int64_t w,
                                                                 bool& negative) {
  // at least ~64k pixels per task, at most 2 tasks per thread
  const int64_t per_image = std::max<int64_t>(
      1, std::min<int64_t>(std::min<int64_t>(h, (h * w) >> 16),
                           (2 * at::get_num_threads() + bsz - 1) / bsz));
  const int64_t ntasks = bsz * per_image;
  std::vector<std::unordered_map<int64_t, Box>> local(ntasks);
  std::vector<uint8_t> neg(ntasks, 0);
  at::parallel_for(0, ntasks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / per_image, c = t % per_image;
      const T* img = pin + b * h * w;
      auto& boxes = local[t];
      int64_t last_id = 0;
      Box* last = nullptr;
      for (int64_t y = c * h / per_image; y < (c + 1) * h / per_image; ++y) {
        const T* row = img + y * w;
        int64_t x = 0;
        while (x < w) {
          const T v = row[x];
          const int64_t x0 = x;
          while (x < w && row[x] == v) ++x;
          if (v == 0) continue;
          if (v < 0) {
            neg[t] = 1;
            continue;
          }
          const int64_t id = static_cast<int64_t>(v);
          if (last == nullptr || id != last_id) {
            last = &boxes.try_emplace(id, Box{y, y, x0, x - 1}).first->second;
            last_id = id;
          }
          last->y0 = std::min(last->y0, y);
          last->y1 = std::max(last->y1, y);
          last->x0 = std::min(last->x0, x0);
          last->x1 = std::max(last->x1, x - 1);
        }
      }
    }
  });
  negative = std::any_of(neg.begin(), neg.end(), [](uint8_t v) { return v != 0; });
  std::vector<std::vector<std::pair<int64_t, Box>>> out(bsz);
  for (int64_t b = 0; b < bsz; ++b) {
    std::unordered_map<int64_t, Box> all = std::move(local[b * per_image]);
    for (int64_t c = 1; c < per_image; ++c)
      for (const auto& [id, bx] : local[b * per_image + c]) {
        auto [it, fresh] = all.try_emplace(id, bx);
        if (!fresh) {
          Box& a = it->second;
          a.y0 = std::min(a.y0, bx.y0);
          a.y1 = std::max(a.y1, bx.y1);
          a.x0 = std::min(a.x0, bx.x0);
          a.x1 = std::max(a.x1, bx.x1);
        }
      }
    out[b].assign(all.begin(), all.end());
    std::sort(out[b].begin(), out[b].end(), [](const auto& x, const auto& y) { return x.first < y.first; });
  }
  return out;
}

template <typename T>
void refine_typed(const at::Tensor& inst, at::Tensor& out, const Params& p) {
  const int64_t bsz = inst.size(0), h = inst.size(1), w = inst.size(2);
  const T* pin = inst.data_ptr<T>();
  T* pout = out.data_ptr<T>();
  const std::vector<int32_t> wd_open = p.disk ? disk_half_widths(p.open_r) : std::vector<int32_t>();
  const std::vector<int32_t> wd_close = p.disk ? disk_half_widths(p.close_r) : std::vector<int32_t>();
  const int64_t margin = std::max(p.open_r, 2 * p.close_r);

  // 1. instances and crops
  std::vector<Item> items;
  std::vector<int64_t> image_begin(bsz + 1, 0);
  bool negative = false;
  const auto instances = find_instances<T>(pin, bsz, h, w, negative);
  for (int64_t b = 0; b < bsz; ++b) {
    image_begin[b] = static_cast<int64_t>(items.size());
    for (const auto& [id, bx] : instances[b]) {
      Item it;
      it.b = b;
      it.id = id;
      it.y0 = std::max<int64_t>(0, bx.y0 - margin);
      it.y1 = std::min<int64_t>(h, bx.y1 + 1 + margin);
      it.x0 = std::max<int64_t>(0, bx.x0 - margin);
      it.x1 = std::min<int64_t>(w, bx.x1 + 1 + margin);
      items.push_back(std::move(it));
    }
  }
  image_begin[bsz] = static_cast<int64_t>(items.size());
  TORCH_CHECK_VALUE(!negative, "instances should hold ids >= 0 (0 = no instance), got negative values");

  // 2. refine every instance in its crop, largest crops first
  std::vector<int64_t> order(items.size());
  std::iota(order.begin(), order.end(), 0);
  auto area = [&](int64_t i) { return (items[i].y1 - items[i].y0) * (items[i].x1 - items[i].x0); };
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return area(a) > area(b); });
  cpu::dynamic_for(static_cast<int64_t>(items.size()), 1, [&](int64_t i) {
    thread_local Scratch s;
    Item& it = items[order[i]];
    const int64_t ch = it.y1 - it.y0, cw = it.x1 - it.x0;
    s.a.resize(ch * cw);
    const T* img = pin + it.b * h * w;
    const T id = static_cast<T>(it.id);
    for (int64_t y = 0; y < ch; ++y) {
      const T* row = img + (it.y0 + y) * w + it.x0;
      uint8_t* a = s.a.data() + y * cw;
      for (int64_t x = 0; x < cw; ++x) a[x] = row[x] == id;
    }
    refine_crop(ch, cw, p, wd_open, wd_close, s);
    it.mask.assign(s.a.begin(), s.a.begin() + ch * cw);
  });

  // 3. paste back, rows in parallel
  at::parallel_for(0, bsz * h, std::max<int64_t>(16, (int64_t{1} << 16) / w), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / h, y = r % h;
      const T* in = pin + r * w;
      T* o = pout + r * w;
      std::fill(o, o + w, T(0));
      for (int64_t i = image_begin[b]; i < image_begin[b + 1]; ++i) {  // kept pixels
        const Item& it = items[i];
        if (y < it.y0 || y >= it.y1) continue;
        const T id = static_cast<T>(it.id);
        const uint8_t* m = it.mask.data() + (y - it.y0) * (it.x1 - it.x0);
        for (int64_t x = it.x0; x < it.x1; ++x)
          if (m[x - it.x0] && in[x] == id) o[x] = id;
      }
      for (int64_t i = image_begin[b]; i < image_begin[b + 1]; ++i) {  // the rest, lowest id first
        const Item& it = items[i];
        if (y < it.y0 || y >= it.y1) continue;
        const T id = static_cast<T>(it.id);
        const uint8_t* m = it.mask.data() + (y - it.y0) * (it.x1 - it.x0);
        for (int64_t x = it.x0; x < it.x1; ++x)
          if (m[x - it.x0] && o[x] == 0) o[x] = id;
      }
    }
  });
}

at::Tensor morph_refine_cpu(const at::Tensor& instances, int64_t open_radius, int64_t close_radius, bool disk,
                            bool fill_holes, int64_t min_size, bool largest_component, int64_t connectivity) {
  check_morph_refine_args(instances, open_radius, close_radius, min_size, connectivity);

  auto inst = instances.contiguous();
  const int64_t h = inst.size(1), w = inst.size(2);
  const bool nothing = open_radius == 0 && close_radius == 0 && !fill_holes && min_size == 0 && !largest_component;
  if (inst.numel() == 0) return inst.clone();
  if (nothing) {
    TORCH_CHECK_VALUE(!at::isSignedType(inst.scalar_type()) || inst.min().item<int64_t>() >= 0,
                      "instances should hold ids >= 0 (0 = no instance), got negative values");
    return inst.clone();
  }
  TORCH_CHECK(w < kFar && h < kFar, "instances should be smaller than ", kFar, " pixels per side, got ", h, " x ", w);
  // radii beyond H + W act like H + W for both elements (the disk then covers the whole image)
  Params p{std::min(open_radius, h + w), std::min(close_radius, h + w), disk, fill_holes, min_size,
           largest_component, connectivity == 8};
  auto out = at::empty_like(inst);
  AT_DISPATCH_INTEGRAL_TYPES(inst.scalar_type(), "morph_refine_cpu", [&] { refine_typed<scalar_t>(inst, out, p); });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pst, CPU, m) { m.impl("morph_refine", &morph_refine_cpu); }

}  // namespace pst
