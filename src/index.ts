// Public API of still.
export {AbortError, DataError, ModelError, NativeError, OptionError, StillError, TrainerError, throwIfAborted} from "./errors.js";
export {MARKERS, type MarkerName} from "./format/markers.js";
export {getBackend, type Backend, type Device} from "./engine/binding.js";
export {Model, loadModel, type ChatMessage, type LoadModelOptions, type ModelFacts} from "./engine/Model.js";
export {inspectGguf, type GgufInspection} from "./engine/inspectGguf.js";
export {Adapter} from "./engine/Adapter.js";
export {
    Scorer, type PerplexityResult, type ScoreRecord, type ScoreResult, type ScorerOptions, type ScoreStats, type SegmentScore
} from "./engine/Scorer.js";
export {
    RolloutEngine, type RolloutEngineOptions, type RolloutRequest, type RolloutRun, type RolloutSample, type RolloutStats,
    type SamplingOptions
} from "./engine/Rollouts.js";
export {makeModel, modelTypes, type MakeModelOptions, type MadeModel, type ModelType} from "./models/makeModel.js";
export {presets, presetNames, type Preset, type PresetName} from "./models/presets.js";
export {formatThought} from "./format/formatThought.js";
export {parseThought, type FormatIssue, type ThoughtParse} from "./format/parseThought.js";
export {convertThinkTags, type ThinkConversion} from "./format/convertThinkTags.js";
export {DEFAULT_SYSTEM_PROMPT, loadSystemPrompt} from "./format/systemPrompt.js";
export {buildChatMessages, buildTrainingMessages, formatQuestion, problemMessages, problemQuestion, type PromptOptions} from "./format/buildChatMessages.js";
export {problemSchema, type Problem} from "./data/problemSchema.js";
export {thoughtExampleSchema, type ThoughtExample} from "./data/thoughtExampleSchema.js";
export {JsonlAppender, readJsonl, readJsonlFile, writeJsonAtomic, writeJsonlAtomic, type JsonlRow, type ReadOptions, type ReadPolicy, type Row} from "./io/jsonl.js";
export {readCsv} from "./io/readCsv.js";
export {readParquet} from "./io/readParquet.js";
export {loadAime, loadCodeProblems, loadMath500, loadMathProblems, loadProblems, rowId, type LoadOptions, type Loaded} from "./data/loadMathProblems.js";
export {codeLayout, codeLayouts, codeProblemFromRow, type CodeLayout} from "./data/codeProblems.js";
export {loadGpqa} from "./data/loadGpqa.js";
export {loadLongFormThoughts} from "./data/loadLongFormThoughts.js";
export {dedupe, type DedupeOptions, type Removal} from "./data/dedupe.js";
export {textQuality, type TextQuality} from "./data/textQuality.js";
export {approximateTokenCount, filterByTokenLength} from "./data/filterByTokenLength.js";
export {answerTypes, extractAnswer, grade, type AnswerType, type GradeOptions, type GradeResult} from "./grade/grade.js";
export {mathEqual} from "./grade/mathEqual.js";
export {gradeProblem, type GradeProblemOptions, type ProblemGrade} from "./grade/gradeProblem.js";
export {problemTypes, type ProblemType} from "./grade/answerType.js";
export {codeInstruction, codeLanguages, codeResultSchema, codeSpecSchema, type CodeLanguage, type CodeResult, type CodeSpec} from "./code/codeSpec.js";
export {CodeVerifier, extractCode, normalizeOutput, verifyOptionsSchema, type VerifyOptions} from "./code/verifyCode.js";
export {
    CodeExecutionError, codeExecutionDisabled, codeRefusal, detectIsolation, runSandboxed, runUnisolated, sandboxLimitsSchema,
    type Isolation, type RunOptions as SandboxRunOptions, type RunResult as SandboxRunResult, type SandboxLimits
} from "./code/sandbox.js";
export {extractChoice, gradeChoice} from "./grade/gradeChoice.js";
export {accuracy, formatAdherence, majAtK, majorityCorrect, meanAtK, meanPassAtK, passAtK, type GradedSample} from "./evaluate/metrics.js";
export {sft, sftExampleSchema, sftOptionsSchema, type SftExample, type SftOptions} from "./train/sft.js";
export {dpo, dpoPairSchema, dpoOptionsSchema, type DpoPair, type DpoOptions} from "./train/dpo.js";
export {type TrainResult} from "./train/runTraining.js";
export {runTrainer, trainerBinary, trainerEventSchema, type TrainerEvent, type StepEvent, type DoneEvent} from "./train/runTrainer.js";
export {LORA_MODULES, loraOptionsSchema, optimizerOptionsSchema, trainingOptionsSchema, type TrainingOptions} from "./train/trainingOptions.js";
export {runLoop, loadInputs, type LoopEvent, type LoopOptions, type LoopSummary, type LoopInputs, type PhaseSummary} from "./loop/runLoop.js";
export {loadRunConfig, parseRunConfig, runConfigSchema, runConfigJsonSchema, type RunConfig, type TrainConfig} from "./loop/config.js";
export {RunDir} from "./loop/RunDir.js";
export {sampleAndGrade, type GradedSample as GradedRollout, type SampleAndGradeOptions} from "./explore/sampleAndGrade.js";
export {byDomain, evaluate, groupBy, standardError, type DomainMetrics, type EvalMetrics, type EvalSet, type GroupMetrics, type ProblemOutcome} from "./evaluate/evaluate.js";
export {compareEvaluations, mcnemarExact, pairedBootstrap, type SetComparison} from "./evaluate/compare.js";
export {evalSetSchema, loadEvalSet, type EvalSetSpec} from "./evaluate/loadEvalSet.js";
export {evaluationOptionsSchema, evaluationReport, readEvaluation, runEvaluation, type EvaluationOptions, type EvaluationProgress, type EvaluationRecord} from "./evaluate/runEvaluation.js";
export {select, type Selection, type ScoredSample} from "./select/select.js";
export {writeReport} from "./loop/report.js";
export {grpo, grpoConfigSchema, checkGrpoConfig, type GrpoConfig, type GrpoEvent, type GrpoOptions, type GrpoResult, type GrpoStepMetrics} from "./rl/grpo.js";
export {ResidentTrainer, policyLossSchema, residentTrainerOptionsSchema, type ResidentTrainerOptions, type PolicyStepEvent} from "./rl/ResidentTrainer.js";
export {rewardSample, rewardSchemeSchema, unfinishedReason, overlongPenalty, type RewardFunction, type RewardInput, type RewardScheme, type RewardedSample} from "./rl/rewards.js";
export {exportPeft, importPeft, type PeftExportResult, type PeftImportResult} from "./interop/peft.js";
export {readSafetensors, writeSafetensors, type SafeTensor, type SafeTensorsFile} from "./interop/safetensors.js";
export {exportRun, exportTargets, type ExportResult, type ExportTarget} from "./interop/exportData.js";
export {mergeAdapters, mergeOptionsSchema, mergeOutputTypes, type MergeOptions, type MergeResult} from "./interop/merge.js";
export {endpointOptionsSchema, runRemote, type EndpointOptions, type RemoteJob, type RemoteResult, type RemoteSampling} from "./remote/RemoteRollouts.js";
export {startLlamaServer, type LlamaServer, type LlamaServerOptions} from "./remote/llamaServer.js";
export {scoreRemote, type RemoteScore, type RemoteScoreItem} from "./remote/remoteScore.js";
export {serveAdapter, type ServeAdapterOptions} from "./remote/serveAdapter.js";
