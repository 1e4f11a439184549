# pgappliance as a VM disk image (qcow2): the container's provisioning (image/provision.sh) on a
# Debian bookworm disk, plus the VM-only steps (packer/scripts/vm.sh: the systemd unit, the env
# file template, sealing). Written for the packer Debian bookworm ships (1.6.6: no `packer init`,
# no required_plugins, no data sources); a modern packer needs packer/modern/ (see README.md).
#
#   packer build -var-file=/var/cache/pgappliance/vm/base.pkrvars.hcl packer/

packer {
  required_version = ">= 1.6.6"
}

locals {
  src        = "${path.root}/.."
  wheel_dir  = var.wheelhouse != "" ? var.wheelhouse : "${path.root}/wheelhouse"
  stage      = "/tmp/pgappliance"
  privileged = "sudo env {{ .Vars }} sh -eu '{{ .Path }}'"
  # The SSH forward listens on loopback only (packer's default listens on every address);
  # -cpu host only with KVM, where it exists.
  qemuargs = concat(
    var.accelerator == "kvm" ? [["-cpu", "host"]] : [],
    var.serial_log != "" ? [["-serial", "file:${var.serial_log}"]] : [],
    [
      ["-netdev", "user,id=user.0,hostfwd=tcp:127.0.0.1:{{ .SSHHostPort }}-:22"],
      ["-device", "virtio-net,netdev=user.0"],
    ],
  )
}

source "qemu" "pgappliance" {
  iso_url            = var.base_image
  iso_checksum       = var.base_image_checksum
  disk_image         = true
  use_backing_file   = false
  format             = "qcow2"
  disk_size          = var.disk_size
  disk_interface     = "virtio"
  disk_discard       = "unmap"
  disk_detect_zeroes = "unmap"
  disk_compression   = true
  output_directory   = var.output_directory
  vm_name            = var.vm_name
  headless           = var.headless
  accelerator        = var.accelerator
  memory             = var.memory
  cpus               = var.cpus
  net_device         = "virtio-net"
  qemuargs           = local.qemuargs
  cd_files           = var.cd_files
  cd_label           = var.cd_label

  boot_wait            = "5s"
  communicator         = "ssh"
  ssh_username         = var.ssh_username
  ssh_private_key_file = var.ssh_private_key_file
  ssh_password         = var.ssh_password
  ssh_timeout          = var.ssh_timeout
  shutdown_command     = "sudo shutdown -P now"
  shutdown_timeout     = "10m"
}

build {
  sources = ["source.qemu.pgappliance"]

  provisioner "shell" {
    inline = ["rm -rf ${local.stage}", "mkdir -p ${local.stage}/src/image ${local.stage}/packer ${local.stage}/wheels"]
  }

  # What image/Dockerfile copies into the container build, at the same relative paths.
  provisioner "file" {
    sources     = ["${local.src}/pyproject.toml", "${local.src}/constraints.txt", "${local.src}/README.md", "${local.src}/appliance"]
    destination = "${local.stage}/src/"
  }

  provisioner "file" {
    sources     = ["${local.src}/image/provision.sh", "${local.src}/image/appliance.yml"]
    destination = "${local.stage}/src/image/"
  }

  provisioner "file" {
    sources     = ["${path.root}/scripts", "${path.root}/files"]
    destination = "${local.stage}/packer/"
  }

  provisioner "file" {
    source      = "${local.wheel_dir}/"
    destination = "${local.stage}/wheels/"
  }

  # Root filesystem to the disk's size; waits for a cloud image's first-boot cloud-init; the postgres
  # user (999/999 unless taken, e.g. gid 999 by systemd-journal).
  provisioner "shell" {
    execute_command = local.privileged
    inline          = ["sh ${local.stage}/packer/scripts/vm.sh prepare"]
  }

  # The one provisioning script the Dockerfile runs too (all phases; full PostgreSQL, JIT included).
  provisioner "shell" {
    execute_command  = local.privileged
    environment_vars = ["PGAPPLIANCE_SRC=${local.stage}/src"]
    inline = [
      "if ls ${local.stage}/wheels/*.whl >/dev/null 2>&1; then export PGAPPLIANCE_WHEELS=${local.stage}/wheels; else echo 'no wheelhouse: pip downloads from PyPI'; fi",
      "export PGAPPLIANCE_UID=$(id -u postgres) PGAPPLIANCE_GID=$(id -g postgres)",
      "sh ${local.stage}/src/image/provision.sh all",
    ]
  }

  provisioner "shell" {
    execute_command = local.privileged
    inline          = ["sh ${local.stage}/packer/scripts/vm.sh configure", "sh ${local.stage}/packer/scripts/vm.sh seal"]
  }

  post-processor "checksum" {
    checksum_types = ["sha256"]
    output         = "${var.output_directory}/${var.vm_name}.sha256"
  }
}
