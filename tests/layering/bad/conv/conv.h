/* Fixture of test_layers_includes_rejects: a layer on top of tensor. */
#include "tensor.h"
