// Catch2 for tests that use LibTorch. c10's logging header defines a glog-style CHECK macro that clashes with
// Catch's CHECK: include LibTorch first, drop its CHECK, then Catch. Include this instead of <catch2/catch.hpp>.
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#undef CHECK
#include <catch2/catch.hpp>
