// The one precompiled header: the LibTorch headers that most translation units of libplm need.
// ATen plus torch::nn::Module (the model's base class); not <torch/torch.h>, which costs 3x more per TU.
#pragma once
#ifndef FMT_HEADER_ONLY
#define FMT_HEADER_ONLY
#endif
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
