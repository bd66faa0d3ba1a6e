// The one precompiled header: the LibTorch headers that most translation units of libplm need.
// Keep it to ATen; <torch/torch.h> costs 3x more per TU (toolchain-notes.md section 2).
#pragma once
#ifndef FMT_HEADER_ONLY
#define FMT_HEADER_ONLY
#endif
#include <ATen/ATen.h>
