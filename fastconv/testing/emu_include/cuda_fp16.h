// fastconv CUDA emulator stand-in for <cuda_fp16.h>: the types and conversions it
// provides come from cuda_emu.h, which the emulator force-includes.
#pragma once
