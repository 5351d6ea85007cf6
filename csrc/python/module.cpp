// The Python module pst._C. It holds no functions of its own: importing it loads this
// shared library, whose static initialisers register the ops with the dispatcher, and
// Python reaches them as torch.ops.pst.<op>. CMake's op library leaves this file out.
#include <Python.h>

extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module = {
      PyModuleDef_HEAD_INIT, "pst._C", "Compiled ops of pst (see torch.ops.pst)", -1, nullptr,
  };
  return PyModule_Create(&module);
}
