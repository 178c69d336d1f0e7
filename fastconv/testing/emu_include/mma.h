// fastconv CUDA emulator stand-in for <mma.h>: nvcuda::wmma comes from cuda_emu.h, which the
// emulator force-includes.
#pragma once
