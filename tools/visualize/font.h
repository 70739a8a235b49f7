#pragma once
// A tiny built-in 5x7 bitmap font for labelling pictures (reconstruction
// grids, training curves) without a font library. Covers A-Z (lower case is
// drawn in capitals), 0-9 and common punctuation; any other character is
// drawn as '?'. Each character cell is (5 + 1) * scale pixels wide and
// 7 * scale high; text is drawn at integer scale with no antialiasing.
#include <array>
#include <cstdint>
#include <string>

#include "data/image_codec.h"

namespace cnx::viz {

using Rgb = std::array<uint8_t, 3>;

constexpr int kGlyphWidth = 5;
constexpr int kGlyphHeight = 7;

// Whether pixel (row, col) of the glyph of `ch` is ink (false outside 5x7).
bool glyph_pixel(char ch, int row, int col);

// Width in pixels of `text` at `scale` (no trailing gap).
int text_width(const std::string& text, int scale = 1);

// Draws `text` with its top-left corner at (x, y); pixels outside the image
// are clipped. The image is gray (1 channel) or RGB (3 channels).
void draw_text(data::Image& img, int x, int y, const std::string& text, const Rgb& colour, int scale = 1);

// One pixel, clipped; gray images get the mean of the colour.
void set_pixel(data::Image& img, int x, int y, const Rgb& colour);

}  // namespace cnx::viz
