// Run-based connected-component labelling (union-find over the horizontal runs of a binary
// image), shared by the connected_components op and the per-instance steps of morph_refine.
//
// A run is a maximal horizontal segment [x0, x1) of foreground pixels in one row. Runs are
// numbered in raster order (row by row, left to right). Two runs of adjacent rows belong to
// one component when they overlap in x (4-connectivity) or overlap or touch diagonally
// (8-connectivity). unite() always links the larger root below the smaller one, so the
// root of every set is its smallest run index: the run that holds the component's first
// pixel in raster order. Numbering roots in run order therefore numbers the components in
// raster order of their first pixels, as scipy.ndimage.label does.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

namespace pst::cpu {

struct Run {
  int32_t x0, x1;  // [x0, x1)
};

// First x' >= x with (row[x'] == value) != equal, or w: skips 8 pixels at a time where it can.
// Pixels are 0/1 bytes.
inline int64_t skip(const uint8_t* row, int64_t x, int64_t w, uint8_t value) {
  const uint64_t pattern = value ? 0x0101010101010101ull : 0;
  for (; x + 8 <= w; x += 8) {
    uint64_t v;
    std::memcpy(&v, row + x, 8);
    if (v != pattern) break;
  }
  while (x < w && row[x] == value) ++x;
  return x;
}

// Number of runs of pixels != 0 in row[0..w).
inline int64_t count_runs(const uint8_t* row, int64_t w) {
  int64_t n = 0;
  uint8_t prev = 0;
  for (int64_t x = 0; x < w; ++x) {
    const uint8_t v = row[x] != 0;
    n += v & (prev ^ 1);
    prev = v;
  }
  return n;
}

// Writes the runs of pixels == 1 in row[0..w) (0/1 bytes) to out; returns how many.
inline int64_t find_runs(const uint8_t* row, int64_t w, Run* out) {
  int64_t n = 0, x = 0;
  while (x < w) {
    x = skip(row, x, w, 0);
    if (x == w) break;
    const int64_t x0 = x;
    x = skip(row, x, w, 1);
    out[n++] = Run{static_cast<int32_t>(x0), static_cast<int32_t>(x)};
  }
  return n;
}

// Appends the runs of pixels == value (0 or 1) in row[0..w) to out (pixels are 0/1 bytes).
inline void append_runs(const uint8_t* row, int64_t w, uint8_t value, std::vector<Run>& out) {
  int64_t x = 0;
  while (x < w) {
    x = skip(row, x, w, value ^ 1);
    if (x == w) break;
    const int64_t x0 = x;
    x = skip(row, x, w, value);
    out.push_back(Run{static_cast<int32_t>(x0), static_cast<int32_t>(x)});
  }
}

template <typename I>
inline I find_root(I* parent, I i) {
  while (parent[i] != i) {
    parent[i] = parent[parent[i]];  // path halving
    i = parent[i];
  }
  return i;
}

template <typename I>
inline void unite(I* parent, I a, I b) {
  a = find_root(parent, a);
  b = find_root(parent, b);
  if (a < b)
    parent[b] = a;
  else if (b < a)
    parent[a] = b;
}

// Unites every run of the current row (global indices cur0 + j) with the runs of the
// previous row (prev0 + i) that it is connected to.
template <typename I>
inline void unite_rows(const Run* prev, I prev0, I nprev, const Run* cur, I cur0, I ncur, bool conn8,
                       I* parent) {
  const int32_t d = conn8 ? 1 : 0;
  I i = 0, j = 0;
  while (i < nprev && j < ncur) {
    if (prev[i].x1 + d <= cur[j].x0) {
      ++i;
    } else if (cur[j].x1 + d <= prev[i].x0) {
      ++j;
    } else {
      unite(parent, prev0 + i, cur0 + j);
      if (prev[i].x1 < cur[j].x1)
        ++i;
      else
        ++j;
    }
  }
}

// Labelling of one small image (used per instance crop, serially).
// After label(): runs holds every run of pixels == value in raster order, row_start[y] the
// index of row y's first run (row_start[h] = runs.size()), root[k] the smallest run index
// of run k's component.
struct RunLabels {
  std::vector<Run> runs;
  std::vector<int32_t> row_start;
  std::vector<int32_t> root;

  void label(const uint8_t* img, int64_t h, int64_t w, uint8_t value, bool conn8) {
    runs.clear();
    row_start.assign(h + 1, 0);
    for (int64_t y = 0; y < h; ++y) {
      row_start[y] = static_cast<int32_t>(runs.size());
      append_runs(img + y * w, w, value, runs);
    }
    row_start[h] = static_cast<int32_t>(runs.size());
    const int32_t n = static_cast<int32_t>(runs.size());
    root.resize(n);
    for (int32_t k = 0; k < n; ++k) root[k] = k;
    for (int64_t y = 1; y < h; ++y) {
      const int32_t p0 = row_start[y - 1], c0 = row_start[y];
      unite_rows<int32_t>(runs.data() + p0, p0, c0 - p0, runs.data() + c0, c0, row_start[y + 1] - c0, conn8,
                          root.data());
    }
    // flatten: parents always have smaller indices, so one forward pass suffices
    for (int32_t k = 0; k < n; ++k) root[k] = root[root[k]];
  }
};

}  // namespace pst::cpu
