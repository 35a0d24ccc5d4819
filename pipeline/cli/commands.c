/* commands.c: the registry of `mpquant` subcommands (STYLE.md rule 9). */
#include "mpq_cli.h"

const mpq_command mpq_commands[] = {
    {
        .name = "check",
        .loads_config = 1,
        .args = "CONFIG | --keys",
        .summary = "parse and validate a configuration, print the effective configuration",
        .help = "  --keys        print the reference of every configuration key (Markdown)\n"
                "  --no-paths    do not check that input files exist\n",
        .options = "keys no-paths",
        .min_pos = 0,
        .max_pos = 1,
        .run = mpq_cmd_check,
    },
    {
        .name = "inspect",
        .args = "FILE",
        .summary = "list a model's tensors, dtypes, shapes, parameter count and architecture",
        .help = "  FILE             llama2.c .bin, .safetensors, a sharded model's directory or\n"
                "                   model.safetensors.index.json, an IDX data file or a\n"
                "                   llama2.c tokenizer.bin\n"
                "  --format=NAME    auto (default), llama2c, safetensors, idx or tokenizer\n",
        .options = "format=",
        .min_pos = 1,
        .max_pos = 1,
        .run = mpq_cmd_inspect,
    },
    {
        .name = "eval",
        .loads_config = 1,
        .args = "CONFIG | --model FILE --tokenizer FILE --text FILE",
        .summary = "evaluate a model: perplexity/KLD (language models) or accuracy (classifiers)",
        .help = "  --model=FILE       model (quick form for language models: no CONFIG needed)\n"
                "  --tokenizer=FILE   llama2.c tokenizer.bin (model.tokenizer)\n"
                "  --text=FILE        text split into documents at blank lines (eval.text)\n"
                "  --docs=N           first N documents or windows (eval.docs; 0 = all)\n"
                "  --protocol=P       docs (default), windows or generated (eval.protocol)\n"
                "  --window=N         windows: tokens per window; generated: per sequence\n"
                "                     (eval.window; 0 = context)\n"
                "  --seed=N           generated: sampling seed (eval.seed)\n"
                "  --generate=N       greedy generation of N tokens from BOS\n"
                "  --reference=FILE   full-precision model for KLD and top-1 agreement\n"
                "  --family=NAME      auto (default), llama or cnn (model.family)\n",
        .options =
            "model= tokenizer= text= docs= protocol= window= seed= generate= reference= family=",
        .min_pos = 0,
        .max_pos = 1,
        .run = mpq_cmd_eval,
    },
    {
        .name = "export",
        .args = "CHECKPOINT --format safetensors|llama2c|gguf|gptq|gptq-v2 --output FILE",
        .summary = "write a checkpoint (or any model) as safetensors, llama2.c, GGUF or GPTQ",
        .help = "  --format=NAME    safetensors (F32, with a Hugging Face config.json beside it\n"
                "                   for Llama models), llama2c (legacy run.c format) or gguf\n"
                "                   (llama.cpp; int layers as Q8_0/Q4_0/Q5_0/Q4_1/Q5_1/\n"
                "                   Q6_K (Q4_K/Q5_K with --kquants) blocks where they map, the\n"
                "                   rest F32; needs --tokenizer).\n"
                "                   Also gptq (qweight/qzeros/scales/g_idx + config.json, as\n"
                "                   transformers and vLLM load it; int 2/3/4/8-bit layers,\n"
                "                   the rest F32) or gptq-v2 (the same, zeros stored as they\n"
                "                   are, for GPTQModel; needed when a zero-point is 0)\n"
                "  --output=FILE    destination (written atomically; never an input)\n"
                "  --overwrite      replace existing output files\n"
                "  --no-config      safetensors: do not write config.json\n"
                "  --tokenizer=PATH the model's tokenizer, embedded where the format holds one\n"
                "  --lossy          quantized formats: convert what the format cannot hold\n"
                "                   exactly (the added error is reported) instead of refusing\n"
                "  --kquants        gguf: int4/int5 group-32 layers with rows of a multiple of\n"
                "                   256 as Q4_K/Q5_K (a conversion: needs --lossy, else F32)\n",
        .options = "format= output= overwrite no-config tokenizer= lossy kquants",
        .min_pos = 1,
        .max_pos = 1,
        .run = mpq_cmd_export,
    },
    {
        .name = "run",
        .loads_config = 1,
        .args = "CONFIG",
        .summary = "quantize: calibrate, Hessians, (measure, importance, budget,) round, "
                   "evaluate FP vs quantized, write the checkpoint (output.path)",
        .help = "  CONFIG    the run configuration (configs/default.cfg; quant, round,\n"
                "            calibration, budget, importance, measure, eval, output sections)\n",
        .options = "",
        .min_pos = 1,
        .max_pos = 1,
        .run = mpq_cmd_run,
    },
    {
        .name = "sweep",
        .loads_config = 1,
        .args = "CONFIG [--stage measure|point|merge|plan] [--index I] [--count N]",
        .summary = "scaling study: one measurement, then budgets, uniform settings and method/"
                   "family comparisons, each evaluated; report with the Pareto front",
        .help = "  (no --stage)      the whole sweep in one job (sweep section of CONFIG)\n"
                "  --stage=measure   calibrate + measure + FP evaluation: OUT/measure.h5\n"
                "  --stage=point     points I .. I+N-1 from OUT/measure.h5 (--index, --count)\n"
                "  --stage=merge     collect OUT/points/*.json into OUT/report.{csv,json,md,png}\n"
                "  --stage=plan      print the number of points (for a job array)\n"
                "  OUT = sweep.output_dir\n",
        .options = "stage= index= count=",
        .min_pos = 1,
        .max_pos = 1,
        .run = mpq_cmd_sweep,
    },
};

const int mpq_ncommands = (int)(sizeof mpq_commands / sizeof mpq_commands[0]);
