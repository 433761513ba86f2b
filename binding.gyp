{
  "//": "The native build is CMake (CMakeLists.txt, driven by cmake-js). This file only lets `node-gyp rebuild` run that same build, so tools that expect node-gyp work; it compiles nothing itself.",
  "targets": [
    {
      "target_name": "still",
      "type": "none",
      "actions": [
        {
          "action_name": "cmake_build",
          "inputs": ["CMakeLists.txt"],
          "outputs": ["build/Release/variants.json"],
          "action": ["node", "scripts/build-native.mjs"]
        }
      ]
    }
  ]
}
