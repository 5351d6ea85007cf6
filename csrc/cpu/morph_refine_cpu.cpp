// CPU kernel of morph_refine (semantics in csrc/morph_refine.cpp).
//
// 1. One pass over the input (rows in parallel, runs of equal ids found a cache line at a
//    time, one hash look-up per run of a new id) records every instance's runs and bounding
//    box. It is the only time the input is read.
// 2. Each instance is refined on its own in a crop: its bounding box grown by
//    max(open_radius, 2 * close_radius), clipped to the image, its mask painted from its runs.
//    Inside that margin the crop edges act like the image border: opening never leaves the
//    box, and the closing only reads pixels within 2 * close_radius of it. Crop edges are also
//    "outside" for hole filling, since every background pixel outside an instance's bounding
//    box (or on its edge row / column) reaches the image border along a straight line.
//    Instances run in parallel, largest first; each keeps one byte per crop pixel: bit 1 = the
//    pixel holds the instance's id, bit 0 = the refined mask holds it.
// 3. The refined crops are pasted back, blocks of rows in parallel: each row is assembled in a
//    line buffer, crops in ascending id order, a pixel taken by the first refined mask that
//    holds it (the lowest id) unless its own instance keeps it (then it stays).
//    Every pixel outside all crops is 0 (an instance's pixels lie in its bounding box), so the
//    output starts as zero pages (zeroed_alloc.h) and only the stretches of the crops that hold
//    an id are written: the output is never read, nor cleared by this kernel.
//
// Erosion and dilation work on 0/1 bytes: an erosion is the dilation of the complement,
// complemented (pixels outside the crop never count, in both). The structuring element is
// a union of centred rectangles (the square: one; the disk: one per distinct row half-width
// k, as tall as the rows of half-width >= k), and a rectangle is a window OR along the rows,
// then along the columns. A window of length L costs about log2(L) + 1 passes of byte ORs
// (windows of doubling length), which the compiler vectorises; the disk's row windows, taken
// narrowest first, mostly cost one pass each (two shifted copies of the previous one).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <unordered_map>
#include <utility>
#include <vector>

#include "checks.h"
#include "morph_refine.h"
#include "cpu/ccl_runs.h"
#include "cpu/parallel.h"
#include "cpu/zeroed_alloc.h"

namespace pst {
namespace {

constexpr int64_t kMaxSide = std::numeric_limits<int32_t>::max() / 4;

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
  int64_t offset;          // of its bytes in the mask buffer (row-major crop)
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

struct Rect {
  int64_t kx, ky;  // half-widths: [-kx, kx] x [-ky, ky]
};

// Centred rectangles whose union is the structuring element of radius r.
std::vector<Rect> element_rects(int64_t r, bool disk) {
  if (!disk) return {Rect{r, r}};
  const std::vector<int32_t> wd = disk_half_widths(r);  // non-increasing in the row offset
  std::vector<Rect> rects;
  for (int64_t dy = 0; dy <= r; ++dy)
    if (dy == r || wd[dy + 1] != wd[dy]) rects.push_back(Rect{wd[dy], dy});  // last row of this half-width
  return rects;
}

struct Scratch {
  std::vector<uint8_t> a, b, pad, rows, rows2, cols, acc, t0, t1;
  std::vector<Rect> rects;
  cpu::RunLabels labels;
  std::vector<int64_t> area;
  std::vector<uint8_t> flag;
};

uint8_t* grow(std::vector<uint8_t>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(n);
  return v.data();
}

void or2(const uint8_t* __restrict a, const uint8_t* __restrict b, uint8_t* __restrict out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] | b[i];
}

// dst[i] = OR of src[i + j * stride], j = 0..L-1, for i in [0, n); src holds n + (L - 1) * stride
// bytes. Windows of length 2, 4, 8, ... (ping-pong in t0 / t1, each as large as src), then two
// overlapping ones.
void window_or(const uint8_t* src, int64_t n, int64_t L, int64_t stride, uint8_t* dst, uint8_t* t0, uint8_t* t1) {
  if (L == 1) {
    std::memcpy(dst, src, n);
    return;
  }
  const uint8_t* cur = src;
  int64_t avail = n + (L - 1) * stride, p = 1;
  uint8_t* bufs[2] = {t0, t1};
  for (int which = 0; 2 * p <= L; p *= 2, which ^= 1) {
    avail -= p * stride;
    or2(cur, cur + p * stride, bufs[which], avail);
    cur = bufs[which];
  }
  if (p == L)
    std::memcpy(dst, cur, n);
  else
    or2(cur, cur + (L - p) * stride, dst, n);
}

// out = the dilation of the h x w 0/1 mask `in` by the union of `rects`, pixels outside the
// crop counting as 0; with invert, 1 - the dilation of 1 - in (an erosion, outside pixels
// counting as 1). in and out may not alias.
void dilate(const uint8_t* in, uint8_t* out, int64_t h, int64_t w, const std::vector<Rect>& rects, bool invert,
            Scratch& s) {
  const uint8_t inv = invert ? 1 : 0;
  // half-widths beyond the crop reach as far as w and h; rectangles inside others are dropped
  std::vector<Rect>& rs = s.rects;
  rs.clear();
  for (const Rect& r : rects) rs.push_back(Rect{std::min(r.kx, w), std::min(r.ky, h)});
  std::sort(rs.begin(), rs.end(), [](const Rect& a, const Rect& b) { return a.kx != b.kx ? a.kx > b.kx : a.ky > b.ky; });
  int64_t KY = -1;
  rs.erase(std::remove_if(rs.begin(), rs.end(),
                          [&](const Rect& r) {
                            if (r.ky <= KY) return true;
                            KY = r.ky;
                            return false;
                          }),
           rs.end());
  const int64_t KX = rs.front().kx;
  const int64_t W = w + 2 * KX, n = h * w;
  // rows padded by KX zeros on both sides
  uint8_t* pad = grow(s.pad, h * W);
  for (int64_t y = 0; y < h; ++y) {
    uint8_t* d = pad + y * W;
    const uint8_t* src = in + y * w;
    std::memset(d, 0, KX);
    for (int64_t x = 0; x < w; ++x) d[KX + x] = src[x] ^ inv;
    std::memset(d + KX + w, 0, KX);
  }
  uint8_t* rows[2] = {grow(s.rows, h * W), grow(s.rows2, h * W)};
  uint8_t* cols = grow(s.cols, (h + 2 * KY) * w);
  uint8_t* t0 = grow(s.t0, std::max(h * W, (h + 2 * KY) * w));
  uint8_t* t1 = grow(s.t1, std::max(h * W, (h + 2 * KY) * w));
  uint8_t* acc = rs.size() > 1 ? grow(s.acc, n) : nullptr;
  int cur = 0;
  int64_t prev_kx = -1;
  for (size_t q = rs.size(); q-- > 0;) {  // widest last
    const int64_t kx = rs[q].kx, ky = rs[q].ky;
    // along the rows, at padded positions p in [kx, h * W - kx) (valid where the window stays
    // in p's padded row, which covers the crop): from the previous window when the two
    // shifted copies of it overlap or touch, else from scratch
    const int64_t d = kx - prev_kx;
    if (prev_kx >= 0 && d <= prev_kx) {
      or2(rows[cur] + kx - d, rows[cur] + kx + d, rows[cur ^ 1] + kx, h * W - 2 * kx);
      cur ^= 1;
    } else {
      window_or(pad, h * W - 2 * kx, 2 * kx + 1, 1, rows[cur] + kx, t0, t1);
    }
    prev_kx = kx;
    // along the columns, rows padded by ky zero rows
    std::memset(cols, 0, ky * w);
    for (int64_t y = 0; y < h; ++y) std::memcpy(cols + (ky + y) * w, rows[cur] + y * W + KX, w);
    std::memset(cols + (ky + h) * w, 0, ky * w);
    const bool first = q + 1 == rs.size();
    window_or(cols, n, 2 * ky + 1, w, first ? out : acc, t0, t1);
    if (!first)
      for (int64_t i = 0; i < n; ++i) out[i] |= acc[i];
  }
  if (inv)
    for (int64_t i = 0; i < n; ++i) out[i] ^= 1;
}

bool any_set(const uint8_t* v, int64_t n) {
  uint8_t acc = 0;
  for (int64_t i = 0; i < n; ++i) acc |= v[i];
  return acc != 0;
}

// Runs the pipeline on the crop mask s.a (h x w, values 0/1); the result is left in s.a.
void refine_crop(int64_t h, int64_t w, const Params& p, const std::vector<Rect>& open_rects,
                 const std::vector<Rect>& close_rects, Scratch& s) {
  const int64_t n = h * w;
  uint8_t* a = s.a.data();
  uint8_t* b = grow(s.b, n);
  if (p.open_r > 0) {
    dilate(a, b, h, w, open_rects, true, s);  // erode
    if (!any_set(b, n)) {
      std::memset(a, 0, n);
      return;
    }
    dilate(b, a, h, w, open_rects, false, s);  // dilate
  }
  if (p.close_r > 0) {
    dilate(a, b, h, w, close_rects, false, s);  // dilate
    dilate(b, a, h, w, close_rects, true, s);   // erode
  }
  if (p.fill_holes) {
    // background components (complementary connectivity) that do not reach the crop edge
    s.labels.label(a, h, w, 0, !p.conn8);
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
        if (!s.flag[root[k]]) std::memset(a + y * w + runs[k].x0, 1, runs[k].x1 - runs[k].x0);
  }
  if (p.min_size > 0 || p.largest) {
    s.labels.label(a, h, w, 1, p.conn8);
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
        if (!s.flag[root[k]]) std::memset(a + y * w + runs[k].x0, 0, runs[k].x1 - runs[k].x0);
  }
}

// First x' >= x with row[x'] != v, or w; a cache line at a time where it can.
template <typename T>
inline int64_t skip_equal(const T* row, int64_t x, int64_t w, T v) {
  constexpr int64_t kLine = 64 / sizeof(T);
  for (; x + kLine <= w; x += kLine) {
    T diff = 0;
    for (int64_t i = 0; i < kLine; ++i) diff |= static_cast<T>(row[x + i] ^ v);
    if (diff != 0) break;
  }
  while (x < w && row[x] == v) ++x;
  return x;
}

// A run of one instance's pixels in a row: [x0, x1) of row y; `slot` numbers the instance
// within the task that found it, later the index of its Item.
struct RunRec {
  int32_t y, x0, x1, slot;
};

// What one task of find_instances saw in its rows.
struct TaskScan {
  std::unordered_map<int64_t, int32_t> slot_of;  // id -> slot
  std::vector<int64_t> ids;                      // by slot
  std::vector<Box> boxes;                        // by slot
  std::vector<RunRec> runs;
  bool negative = false;
};

// The one pass over the input: rows split into tasks (each inside one image, at least ~64k
// pixels, at most 8 per thread) that threads take one at a time (a thread held up by another
// process leaves the rest to the others); one hash look-up per run of a new id.
template <typename T>
std::vector<TaskScan> scan_instances(const T* pin, int64_t bsz, int64_t h, int64_t w, int64_t& per_image) {
  per_image = std::max<int64_t>(1, std::min<int64_t>(std::min<int64_t>(h, (h * w) >> 16),
                                                     (8 * at::get_num_threads() + bsz - 1) / bsz));
  std::vector<TaskScan> tasks(bsz * per_image);
  cpu::dynamic_for(bsz * per_image, 1, [&](int64_t t) {
    const int64_t b = t / per_image, c = t % per_image;
    const T* img = pin + b * h * w;
    TaskScan& ts = tasks[t];
    int64_t last_id = 0;
    int32_t slot = -1;
    for (int64_t y = c * h / per_image; y < (c + 1) * h / per_image; ++y) {
      const T* row = img + y * w;
      int64_t x = 0;
      while (x < w) {
        const T v = row[x];
        const int64_t x0 = x;
        x = skip_equal<T>(row, x + 1, w, v);
        if (v == 0) continue;
        if (v < 0) {
          ts.negative = true;
          continue;
        }
        const int64_t id = static_cast<int64_t>(v);
        if (slot < 0 || id != last_id) {
          auto [it, fresh] = ts.slot_of.try_emplace(id, static_cast<int32_t>(ts.ids.size()));
          if (fresh) {
            ts.ids.push_back(id);
            ts.boxes.push_back(Box{y, y, x0, x - 1});
          }
          slot = it->second;
          last_id = id;
        }
        Box& bx = ts.boxes[slot];
        bx.y1 = y;  // rows come in order
        bx.x0 = std::min(bx.x0, x0);
        bx.x1 = std::max(bx.x1, x - 1);
        ts.runs.push_back(RunRec{static_cast<int32_t>(y), static_cast<int32_t>(x0), static_cast<int32_t>(x), slot});
      }
    }
  });
  return tasks;
}

// Refines the bsz images of pin into pout (zero on entry). Its three steps each run in parallel
// when called outside a parallel region, and serially inside one.
template <typename T>
void refine_images(const T* pin, T* pout, int64_t bsz, int64_t h, int64_t w, const Params& p,
                   const std::vector<Rect>& open_rects, const std::vector<Rect>& close_rects) {
  const int64_t margin = std::max(p.open_r, 2 * p.close_r);

  // 1. instances (items, by image and then id), their crops and runs
  int64_t per_image = 1;
  std::vector<TaskScan> tasks = scan_instances<T>(pin, bsz, h, w, per_image);
  TORCH_CHECK_VALUE(std::none_of(tasks.begin(), tasks.end(), [](const TaskScan& t) { return t.negative; }),
                    "instances should hold ids >= 0 (0 = no instance), got negative values");
  std::vector<Item> items;
  std::vector<int64_t> image_begin(bsz + 1, 0);
  for (int64_t b = 0; b < bsz; ++b) {
    image_begin[b] = static_cast<int64_t>(items.size());
    std::vector<int64_t> ids;
    for (int64_t c = 0; c < per_image; ++c) {
      const auto& t = tasks[b * per_image + c].ids;
      ids.insert(ids.end(), t.begin(), t.end());
    }
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    for (const int64_t id : ids) items.push_back(Item{b, id, h, -1, w, -1, 0});
    for (int64_t c = 0; c < per_image; ++c) {  // boxes merged; slots become item indices
      TaskScan& t = tasks[b * per_image + c];
      for (size_t k = 0; k < t.ids.size(); ++k) {
        const int64_t i = image_begin[b] + (std::lower_bound(ids.begin(), ids.end(), t.ids[k]) - ids.begin());
        Item& it = items[i];
        it.y0 = std::min(it.y0, t.boxes[k].y0);
        it.y1 = std::max(it.y1, t.boxes[k].y1);
        it.x0 = std::min(it.x0, t.boxes[k].x0);
        it.x1 = std::max(it.x1, t.boxes[k].x1);
        t.ids[k] = i;
      }
    }
  }
  const int64_t nitems = static_cast<int64_t>(items.size());
  image_begin[bsz] = nitems;
  int64_t total = 0;
  for (Item& it : items) {  // box (inclusive) -> crop (half-open, grown by the margin)
    it.y0 = std::max<int64_t>(0, it.y0 - margin);
    it.y1 = std::min<int64_t>(h, it.y1 + 1 + margin);
    it.x0 = std::max<int64_t>(0, it.x0 - margin);
    it.x1 = std::min<int64_t>(w, it.x1 + 1 + margin);
    it.offset = total;
    total += (it.y1 - it.y0) * (it.x1 - it.x0);
  }
  // runs grouped by item
  std::vector<int64_t> run_begin(nitems + 1, 0);
  for (const TaskScan& t : tasks)
    for (const RunRec& r : t.runs) ++run_begin[t.ids[r.slot] + 1];
  std::partial_sum(run_begin.begin(), run_begin.end(), run_begin.begin());
  std::vector<RunRec> runs(run_begin[nitems]);
  {
    std::vector<int64_t> fill(run_begin.begin(), run_begin.end() - 1);
    for (const TaskScan& t : tasks)
      for (const RunRec& r : t.runs) runs[fill[t.ids[r.slot]]++] = r;
  }
  tasks.clear();

  // 2. refine every instance in its crop, largest crops first; masks: bit 1 = the instance's
  // own pixel, bit 0 = kept by the refined mask
  std::unique_ptr<uint8_t[]> masks(new uint8_t[std::max<int64_t>(total, 1)]);
  std::vector<int64_t> order(nitems);
  std::iota(order.begin(), order.end(), 0);
  auto area = [&](int64_t i) { return (items[i].y1 - items[i].y0) * (items[i].x1 - items[i].x0); };
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return area(a) > area(b); });
  cpu::dynamic_for(nitems, 1, [&](int64_t i) {
    thread_local Scratch s;
    const Item& it = items[order[i]];
    const int64_t ch = it.y1 - it.y0, cw = it.x1 - it.x0, n = ch * cw;
    uint8_t* a = grow(s.a, n);
    std::memset(a, 0, n);
    for (int64_t k = run_begin[order[i]]; k < run_begin[order[i] + 1]; ++k) {
      const RunRec& r = runs[k];
      std::memset(a + (r.y - it.y0) * cw + (r.x0 - it.x0), 1, r.x1 - r.x0);
    }
    uint8_t* m = masks.get() + it.offset;
    std::memcpy(m, a, n);
    refine_crop(ch, cw, p, open_rects, close_rects, s);
    a = s.a.data();
    for (int64_t k = 0; k < n; ++k) m[k] = static_cast<uint8_t>((m[k] << 1) | a[k]);
  });

  // 3. paste into the zero output, blocks of rows in parallel; each row is assembled in a line
  // buffer and only the stretches of each crop between its first and last non-zero pixel are
  // written (the output is never read, so the pages that stay zero are never touched)
  constexpr int64_t kRowBlock = 16;
  const int64_t blocks_per_image = (h + kRowBlock - 1) / kRowBlock;
  cpu::dynamic_for(bsz * blocks_per_image, 1, [&](int64_t blk) {
    thread_local std::vector<T> line_buf;
    if (static_cast<int64_t>(line_buf.size()) < w) line_buf.resize(w);
    T* line = line_buf.data();
    const int64_t b = blk / blocks_per_image;
    const int64_t ya = (blk % blocks_per_image) * kRowBlock, yb = std::min(h, ya + kRowBlock);
    for (int64_t y = ya; y < yb; ++y) {
      T* o = pout + (b * h + y) * w;
      int64_t lo = w, hi = 0;
      for (int64_t i = image_begin[b]; i < image_begin[b + 1]; ++i)
        if (y >= items[i].y0 && y < items[i].y1) {
          lo = std::min(lo, items[i].x0);
          hi = std::max(hi, items[i].x1);
        }
      if (lo >= hi) continue;
      std::fill(line + lo, line + hi, T(0));
      // ascending ids: a pixel goes to the first (lowest) id whose refined mask holds it, and
      // to its own id if that one keeps it (no later id can take it: it is not their pixel)
      for (int64_t i = image_begin[b]; i < image_begin[b + 1]; ++i) {
        const Item& it = items[i];
        if (y < it.y0 || y >= it.y1) continue;
        const T id = static_cast<T>(it.id);
        const int64_t cw = it.x1 - it.x0;
        const uint8_t* m = masks.get() + it.offset + (y - it.y0) * cw;
        T* l = line + it.x0;
        for (int64_t x = 0; x < cw;) {
          uint64_t eight = 1;
          if (x + 8 <= cw) std::memcpy(&eight, m + x, 8);
          if (eight == 0) {  // 8 pixels outside both masks
            x += 8;
            continue;
          }
          for (const int64_t e = std::min(cw, x + 8); x < e; ++x)
            if ((m[x] & 1) && (l[x] == 0 || m[x] == 3)) l[x] = id;
        }
      }
      for (int64_t i = image_begin[b]; i < image_begin[b + 1]; ++i) {
        const Item& it = items[i];
        if (y < it.y0 || y >= it.y1) continue;
        int64_t x0 = it.x0, x1 = it.x1;
        while (x0 < x1 && line[x0] == 0) ++x0;
        while (x1 > x0 && line[x1 - 1] == 0) --x1;
        if (x0 < x1) std::memcpy(o + x0, line + x0, (x1 - x0) * sizeof(T));
      }
    }
  });
}

// With at least as many images as threads, each thread takes whole images (one parallel
// region: no thread waits at a barrier between the steps for one that another process holds
// up); otherwise the steps of the batch run in parallel one after the other.
template <typename T>
void refine_typed(const at::Tensor& inst, at::Tensor& out, const Params& p) {
  const int64_t bsz = inst.size(0), h = inst.size(1), w = inst.size(2);
  const T* pin = inst.data_ptr<T>();
  T* pout = out.data_ptr<T>();
  const std::vector<Rect> open_rects = element_rects(p.open_r, p.disk);
  const std::vector<Rect> close_rects = element_rects(p.close_r, p.disk);
  if (bsz > 1 && bsz >= at::get_num_threads())
    cpu::dynamic_for(bsz, 1, [&](int64_t b) {
      refine_images<T>(pin + b * h * w, pout + b * h * w, 1, h, w, p, open_rects, close_rects);
    });
  else
    refine_images<T>(pin, pout, bsz, h, w, p, open_rects, close_rects);
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
  TORCH_CHECK(w < kMaxSide && h < kMaxSide, "instances should be smaller than ", kMaxSide, " pixels per side, got ",
              h, " x ", w);
  // radii beyond H + W act like H + W for both elements (the disk then covers the whole image)
  Params p{std::min(open_radius, h + w), std::min(close_radius, h + w), disk, fill_holes, min_size,
           largest_component, connectivity == 8};
  auto out = cpu::zeroed_empty(inst.sizes(), inst);
  AT_DISPATCH_INTEGRAL_TYPES(inst.scalar_type(), "morph_refine_cpu", [&] { refine_typed<scalar_t>(inst, out, p); });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pst, CPU, m) { m.impl("morph_refine", &morph_refine_cpu); }

}  // namespace pst
