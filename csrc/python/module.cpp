// The Python module pst._C. Importing it loads this shared library, whose static
// initialisers register the ops with the dispatcher, and Python reaches them as
// torch.ops.pst.<op>. Its one function reports which vector variant the CPU loops use.
// CMake's op library leaves this file out.
#include <Python.h>

#include "cpu/simd.h"

namespace {

PyObject* cpu_isa(PyObject*, PyObject*) { return PyUnicode_FromString(pst::cpu::isa_name()); }

PyMethodDef methods[] = {
    {"cpu_isa", cpu_isa, METH_NOARGS,
     "The instruction set of the CPU loops in use: 'avx512', 'avx2' or 'baseline'."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module = {
      PyModuleDef_HEAD_INIT, "pst._C", "Compiled ops of pst (see torch.ops.pst)", -1, methods,
  };
  return PyModule_Create(&module);
}
